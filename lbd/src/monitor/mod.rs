//! Health monitors (placeholder; being written).
