//! Randomized fault soak: a seeded fault schedule against a fleet on the real node under client
//! load, a history checker over what clients saw and what etcd recorded, and a bounded
//! decoder fuzz runner.

pub mod collect;
pub mod entry;
pub mod env;
pub mod error;
pub mod event_log;
pub mod faults;
pub mod fuzz;
pub mod history;
pub mod hostile;
pub mod load;
pub mod records;
pub mod run;
pub mod windows;
