//! `$(VAR)` expansion exactly as Kubernetes does it for container `command`, `args` and `env`
//! values (a port of `third_party/forked/golang/expansion`).
//!
//! `$(NAME)` becomes the value of `NAME` when it is defined and stays `$(NAME)` otherwise;
//! `$$` is an escaped `$` (so `$$(NAME)` yields the literal `$(NAME)`); any other `$` and an
//! unclosed `$(` are kept as written.

/// Expands `$(VAR)` references in `input` with `lookup`.
pub fn expand<'a, F>(input: &str, lookup: F) -> String
where
    F: Fn(&str) -> Option<&'a str>,
{
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let mut chars = after.chars();
        match chars.next() {
            // A trailing `$` is kept.
            None => {
                out.push('$');
                rest = after;
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match lookup(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<&'static str> {
        match name {
            "VAR_A" => Some("A"),
            "VAR_B" => Some("B"),
            "VAR_EMPTY" => Some(""),
            "POD_IP" => Some("127.0.1.2"),
            _ => None,
        }
    }

    /// Cases from the Kubernetes expansion tests.
    #[test]
    fn matches_kubernetes_cases() {
        let cases = [
            ("$(VAR_A)", "A"),
            ("___$(VAR_B)___", "___B___"),
            ("$(VAR_A)-$(VAR_A)", "A-A"),
            ("$(VAR_EMPTY)", ""),
            ("$(VAR_DNE)", "$(VAR_DNE)"),
            ("$$(VAR_A)", "$(VAR_A)"),
            ("$$$(VAR_A)", "$A"),
            ("$$$$(VAR_A)", "$$(VAR_A)"),
            ("$$", "$"),
            ("$", "$"),
            ("foo$", "foo$"),
            ("$(VAR_A", "$(VAR_A"),
            ("$(", "$("),
            ("$()", "$()"),
            ("$VAR_A", "$VAR_A"),
            ("f000-$$VAR_A", "f000-$VAR_A"),
            ("--listen=$(POD_IP):7000", "--listen=127.0.1.2:7000"),
            ("$é$(VAR_A)", "$éA"),
            ("plain text", "plain text"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, env), want, "input {input:?}");
        }
    }

    #[test]
    fn never_panics_on_arbitrary_text() {
        for input in [
            "$(",
            "$$(",
            "(((",
            ")$)",
            "$)$(",
            "\u{1F600}$\u{1F600}",
            "$(\u{1F600})",
        ] {
            let _ = expand(input, env);
        }
    }
}
