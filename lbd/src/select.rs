//! Backend selection (placeholder; being written).
