//! In-process replication scenarios (being written).
