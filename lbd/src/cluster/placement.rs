//! placement (being written).
