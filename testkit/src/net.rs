//! Free loopback ports for servers a test starts.

use std::net::TcpListener;

/// A free loopback port (bound and released; the caller binds it soon after).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free loopback ports (their listeners are open together, so they differ).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    std::array::from_fn(|i| {
        listeners[i]
            .local_addr()
            .expect("local address of a bound port")
            .port()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_taken_together_differ() {
        let [a, b, c] = free_ports::<3>();
        assert!(a != b && b != c && a != c);
        assert_ne!(free_port(), 0);
    }
}
