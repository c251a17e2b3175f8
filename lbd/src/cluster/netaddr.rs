//! netaddr (being written).
