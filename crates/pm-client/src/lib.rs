//! pm-client
