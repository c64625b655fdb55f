//! pm-supervisor
