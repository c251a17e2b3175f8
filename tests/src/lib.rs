//! Topology tests live in tests/*.rs.
