//! In-process simulated CPG cluster (being written).
