//! Relay (being written).
