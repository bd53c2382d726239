//! Randomized fault soak (issue #9): a seeded fault schedule against a real fleet under client
//! load, a history checker over what clients saw and what etcd recorded, and a bounded
//! decoder fuzz runner.

pub mod fuzz;
pub mod history;
