//! heartbeat (being written).
