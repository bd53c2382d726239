//! Prints every Switchboard CRD as YAML.

fn main() {}
