//! pm-cli
