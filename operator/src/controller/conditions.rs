//! Standard `metav1.Condition` bookkeeping: set a condition, keeping its transition time
//! while its status does not change (so an unchanged status compares equal and is not
//! written again).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition status values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`.
    Unknown,
}

impl Status {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

/// Sets condition `type_` in `conditions` (replacing one of the same type). The transition
/// time is `now` when the status changed or the condition is new, else the previous one.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Status,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) {
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let transition = previous
        .map(|i| &conditions[i])
        .filter(|c| c.status == status.as_str())
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    let condition = Condition {
        type_: type_.to_string(),
        status: status.as_str().to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: transition,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// Looks up condition `type_`.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// `snake_case` (a metric label) to `CamelCase` (a condition or Event reason).
pub fn camel_case(label: &str) -> String {
    label
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut list = Vec::new();
        set(
            &mut list,
            "Ready",
            Status::False,
            "Starting",
            "m1".into(),
            Some(1),
            &at(10),
        );
        set(
            &mut list,
            "Ready",
            Status::False,
            "StillStarting",
            "m2".into(),
            Some(2),
            &at(20),
        );
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].last_transition_time, at(10));
        assert_eq!(list[0].reason, "StillStarting");
        assert_eq!(list[0].observed_generation, Some(2));
        set(
            &mut list,
            "Ready",
            Status::True,
            "Serving",
            "m3".into(),
            Some(2),
            &at(30),
        );
        assert_eq!(get(&list, "Ready").unwrap().last_transition_time, at(30));
        set(
            &mut list,
            "Degraded",
            Status::Unknown,
            "X",
            String::new(),
            None,
            &at(40),
        );
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn camel_cases_labels() {
        assert_eq!(camel_case("invalid_spec"), "InvalidSpec");
        assert_eq!(camel_case("kube_api"), "KubeApi");
        assert_eq!(camel_case("x"), "X");
        assert_eq!(camel_case(""), "");
    }
}
