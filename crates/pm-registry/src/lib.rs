//! pm-registry
