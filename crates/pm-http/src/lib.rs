//! pm-http
