//! Weight edits of a ProtocolRollout (pure): `set-weight` arguments, `promote`, `abort`, and
//! the one-line description of what changed. Everything is checked before anything is sent.

use std::collections::BTreeMap;

use super::PluginError;

/// Version weights in spec order.
pub type Weights = Vec<(String, i32)>;

/// Parses `VERSION=WEIGHT` arguments.
pub fn parse(args: &[String]) -> Result<Vec<(String, i32)>, PluginError> {
    if args.is_empty() {
        return Err(PluginError::BadWeight(String::new()));
    }
    args.iter()
        .map(|arg| {
            let (name, weight) = arg
                .split_once('=')
                .ok_or_else(|| PluginError::BadWeight(arg.clone()))?;
            let weight: i32 = weight
                .trim()
                .parse()
                .map_err(|_| PluginError::BadWeight(arg.clone()))?;
            let name = name.trim();
            if name.is_empty() || !(0..=100).contains(&weight) {
                return Err(PluginError::BadWeight(arg.clone()));
            }
            Ok((name.to_string(), weight))
        })
        .collect()
}

fn known(current: &Weights) -> Vec<String> {
    current.iter().map(|(n, _)| n.clone()).collect()
}

fn check_known(current: &Weights, name: &str) -> Result<(), PluginError> {
    if current.iter().any(|(n, _)| n == name) {
        Ok(())
    } else {
        Err(PluginError::UnknownVersion {
            version: name.to_string(),
            known: known(current),
        })
    }
}

fn check_sum(weights: &Weights) -> Result<(), PluginError> {
    let sum: i64 = weights.iter().map(|(_, w)| i64::from(*w)).sum();
    if sum == 100 {
        Ok(())
    } else {
        Err(PluginError::WeightSum {
            weights: render(weights),
            sum,
        })
    }
}

/// `set-weight`: the named versions get their weights. With two versions and one named, the
/// other gets the rest (`canary=30` → the other 70). The result must sum to 100.
pub fn set(current: &Weights, changes: &[(String, i32)]) -> Result<Weights, PluginError> {
    for (name, _) in changes {
        check_known(current, name)?;
    }
    let changed: BTreeMap<&str, i32> = changes.iter().map(|(n, w)| (n.as_str(), *w)).collect();
    let mut next: Weights = current
        .iter()
        .map(|(name, weight)| {
            let weight = changed.get(name.as_str()).copied().unwrap_or(*weight);
            (name.clone(), weight)
        })
        .collect();
    if current.len() == 2 && changed.len() == 1 {
        let (set_name, set_weight) = changes[0].clone();
        for (name, weight) in &mut next {
            if *name != set_name {
                *weight = 100 - set_weight;
            }
        }
    }
    check_sum(&next)?;
    Ok(next)
}

/// `promote [VERSION]`: all weight to `version`, or to the last (newest) version in the spec.
pub fn promote(current: &Weights, version: Option<&str>) -> Result<Weights, PluginError> {
    let target =
        match version {
            Some(name) => {
                check_known(current, name)?;
                name.to_string()
            }
            None => current.last().map(|(n, _)| n.clone()).ok_or_else(|| {
                PluginError::UnknownVersion {
                    version: String::new(),
                    known: Vec::new(),
                }
            })?,
        };
    Ok(current
        .iter()
        .map(|(name, _)| (name.clone(), if *name == target { 100 } else { 0 }))
        .collect())
}

/// `abort`: the weights recorded as last stable in the rollout's status (versions missing
/// there get 0).
pub fn abort(current: &Weights, stable: &BTreeMap<String, i32>) -> Result<Weights, PluginError> {
    if stable.is_empty() {
        return Err(PluginError::NoStableWeights);
    }
    let next: Weights = current
        .iter()
        .map(|(name, _)| (name.clone(), stable.get(name).copied().unwrap_or(0)))
        .collect();
    check_sum(&next)?;
    Ok(next)
}

/// `v1=90,v2=10`.
pub fn render(weights: &Weights) -> String {
    weights
        .iter()
        .map(|(n, w)| format!("{n}={w}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What changed, e.g. `v1 90 → 70, v2 10 → 30`, or `weights unchanged (v1=100)`.
pub fn describe(before: &Weights, after: &Weights) -> String {
    let changes: Vec<String> = before
        .iter()
        .zip(after)
        .filter(|((_, a), (_, b))| a != b)
        .map(|((name, a), (_, b))| format!("{name} {a} → {b}"))
        .collect();
    if changes.is_empty() {
        format!("weights unchanged ({})", render(after))
    } else {
        format!("weights {}", changes.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(pairs: &[(&str, i32)]) -> Weights {
        pairs.iter().map(|(n, w)| (n.to_string(), *w)).collect()
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse(&args(&["v1=70", " v2 = 30"])).unwrap(),
            vec![("v1".to_string(), 70), ("v2".to_string(), 30)]
        );
        for bad in ["v1", "v1=x", "=5", "v1=101", "v1=-1"] {
            let error = parse(&args(&[bad])).unwrap_err();
            assert!(matches!(error, PluginError::BadWeight(ref a) if a == bad));
            assert!(error.to_string().contains("VERSION=WEIGHT"));
        }
    }

    #[test]
    fn two_versions_take_the_rest_and_more_must_sum_to_100() {
        let two = w(&[("stable", 90), ("canary", 10)]);
        let next = set(&two, &parse(&args(&["canary=30"])).unwrap()).unwrap();
        assert_eq!(next, w(&[("stable", 70), ("canary", 30)]));
        assert_eq!(
            describe(&two, &next),
            "weights stable 90 → 70, canary 10 → 30"
        );

        let three = w(&[("a", 50), ("b", 30), ("c", 20)]);
        let error = set(&three, &parse(&args(&["c=30"])).unwrap()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "weights must sum to 100; a=50,b=30,c=30 sums to 110"
        );
        let ok = set(&three, &parse(&args(&["b=20", "c=30"])).unwrap()).unwrap();
        assert_eq!(ok, w(&[("a", 50), ("b", 20), ("c", 30)]));
        let unknown = set(&two, &parse(&args(&["v9=10"])).unwrap()).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "unknown version \"v9\"; the rollout has stable, canary"
        );
        let both_wrong = set(&two, &parse(&args(&["stable=50", "canary=10"])).unwrap());
        assert!(matches!(
            both_wrong,
            Err(PluginError::WeightSum { sum: 60, .. })
        ));
    }

    #[test]
    fn promote_and_abort() {
        let two = w(&[("v1", 60), ("v2", 40)]);
        assert_eq!(promote(&two, None).unwrap(), w(&[("v1", 0), ("v2", 100)]));
        assert_eq!(
            promote(&two, Some("v1")).unwrap(),
            w(&[("v1", 100), ("v2", 0)])
        );
        assert!(promote(&two, Some("v3")).is_err());
        let stable = BTreeMap::from([("v1".to_string(), 100)]);
        assert_eq!(abort(&two, &stable).unwrap(), w(&[("v1", 100), ("v2", 0)]));
        assert!(matches!(
            abort(&two, &BTreeMap::new()),
            Err(PluginError::NoStableWeights)
        ));
        assert_eq!(describe(&two, &two), "weights unchanged (v1=60,v2=40)");
    }
}
