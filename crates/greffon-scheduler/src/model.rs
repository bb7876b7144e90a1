//! Tasks, runs, and what a caller sends to create or change a task.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// When a task fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// A cron expression (5 fields, an optional leading seconds field, or an
    /// alias such as `@daily`) read as wall-clock time in `tz`.
    Cron {
        expr: String,
        /// An IANA zone; filled with the host's zone when the task is
        /// saved, then stored, so moving the host does not move the task.
        #[serde(default)]
        tz: Option<String>,
    },
    /// Every `every_s` seconds from `start` (default: when it is saved),
    /// until `end`.
    Interval {
        every_s: u64,
        #[serde(default)]
        start: Option<DateTime<Utc>>,
        #[serde(default)]
        end: Option<DateTime<Utc>>,
    },
    /// Once.
    Date { at: DateTime<Utc> },
}

/// Which of several fire times missed while nothing ran (the host was
/// down, or the loop was late) actually run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coalesce {
    /// Only the most recent one.
    #[default]
    Latest,
    /// Only the oldest one.
    Earliest,
    /// Every one (at most [`crate::MAX_CATCH_UP`]).
    All,
}

impl Coalesce {
    pub fn as_str(self) -> &'static str {
        match self {
            Coalesce::Latest => "latest",
            Coalesce::Earliest => "earliest",
            Coalesce::All => "all",
        }
    }

    pub(crate) fn parse(s: &str) -> Coalesce {
        match s {
            "earliest" => Coalesce::Earliest,
            "all" => Coalesce::All,
            _ => Coalesce::Latest,
        }
    }
}

/// How a task runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Options {
    pub enabled: bool,
    pub coalesce: Coalesce,
    /// How late a fire may start and still run; `None`: always run late.
    pub misfire_grace_s: Option<f64>,
    /// Runs of this task at once; a fire beyond it is recorded as missed.
    pub max_instances: u32,
    /// Up to this many seconds added to each fire, spreading tasks that
    /// share a time.
    pub jitter_s: f64,
    /// Replaces the plugin's own timeout for this task's runs.
    pub timeout_s: Option<f64>,
    /// Times a scheduled run that failed, timed out or was lost is tried
    /// again.
    pub retries: u32,
    /// Wait before the first retry; doubled for each next one, up to
    /// [`RETRY_BACKOFF_CAP`].
    pub retry_backoff_s: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            enabled: true,
            coalesce: Coalesce::Latest,
            misfire_grace_s: None,
            max_instances: 1,
            jitter_s: 0.0,
            timeout_s: None,
            retries: 0,
            retry_backoff_s: DEFAULT_RETRY_BACKOFF_S,
        }
    }
}

/// `retry_backoff_s` when a task does not say.
pub const DEFAULT_RETRY_BACKOFF_S: f64 = 10.0;

/// The longest wait between two attempts, however many came before.
pub const RETRY_BACKOFF_CAP: std::time::Duration = std::time::Duration::from_secs(3600);

impl Options {
    /// When attempt `failed + 1` of a run whose attempt `failed` ended in
    /// a failure may start, or `None` when the retries are spent. The one
    /// rule both stores apply.
    pub fn retry_at(&self, failed: u32, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if failed > self.retries {
            return None;
        }
        let doubling = 2f64.powi(i32::try_from(failed.saturating_sub(1)).map_or(64, |n| n.min(64)));
        let wait = (self.retry_backoff_s * doubling).min(RETRY_BACKOFF_CAP.as_secs_f64());
        let wait = chrono::Duration::milliseconds((wait * 1000.0) as i64);
        Some(at + wait)
    }
}

/// A saved task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    pub id: i64,
    pub name: String,
    pub plugin: String,
    pub args: Value,
    pub trigger: Trigger,
    #[serde(flatten)]
    pub options: Options,
    /// The next fire time; `None` when nothing is left to fire (a date that
    /// has fired, an interval past its end).
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What creates a task. Every field but `name`, `plugin` and `trigger`
/// has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    pub name: String,
    pub plugin: String,
    #[serde(default = "empty_object")]
    pub args: Value,
    pub trigger: Trigger,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub coalesce: Option<Coalesce>,
    #[serde(default)]
    pub misfire_grace_s: Option<f64>,
    #[serde(default)]
    pub max_instances: Option<u32>,
    #[serde(default)]
    pub jitter_s: Option<f64>,
    #[serde(default)]
    pub timeout_s: Option<f64>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub retry_backoff_s: Option<f64>,
}

/// A partial change. Absent fields are kept; `misfire_grace_s` and
/// `timeout_s` may be set to `null` to go back to their default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskPatch {
    pub name: Option<String>,
    pub plugin: Option<String>,
    pub args: Option<Value>,
    pub trigger: Option<Trigger>,
    pub enabled: Option<bool>,
    pub coalesce: Option<Coalesce>,
    #[serde(default, deserialize_with = "nullable")]
    pub misfire_grace_s: Option<Option<f64>>,
    pub max_instances: Option<u32>,
    pub jitter_s: Option<f64>,
    #[serde(default, deserialize_with = "nullable")]
    pub timeout_s: Option<Option<f64>>,
    pub retries: Option<u32>,
    pub retry_backoff_s: Option<f64>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Tells "absent" (outer `None`, by `default`) from `null` (`Some(None)`).
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

/// Why a run exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Scheduled,
    Manual,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Scheduled => "scheduled",
            RunKind::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// A retry waiting for its `retry_at`.
    Pending,
    Running,
    Ok,
    /// The plugin answered `{"error"}` or the call failed.
    Error,
    /// Not run: later than `misfire_grace_s`, or `max_instances` reached.
    Missed,
    TimedOut,
    /// Its host stopped (crash, kill, power loss) or lost its lease while
    /// it ran: the outcome is unknown.
    Lost,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Ok => "ok",
            RunStatus::Error => "error",
            RunStatus::Missed => "missed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Lost => "lost",
        }
    }

    /// Whether a run that ended so is retried (when the task allows).
    pub fn retried(self) -> bool {
        matches!(
            self,
            RunStatus::Error | RunStatus::TimedOut | RunStatus::Lost
        )
    }

    pub(crate) fn parse(s: &str) -> RunStatus {
        match s {
            "pending" => RunStatus::Pending,
            "running" => RunStatus::Running,
            "lost" => RunStatus::Lost,
            "ok" => RunStatus::Ok,
            "missed" => RunStatus::Missed,
            "timed_out" => RunStatus::TimedOut,
            _ => RunStatus::Error,
        }
    }
}

/// One execution (or recorded non-execution) of a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub id: i64,
    pub task_id: i64,
    pub kind: RunKind,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: RunStatus,
    /// 1 for the fire itself, 2 for its first retry, and so on.
    pub attempt: u32,
    /// When a `pending` retry may start.
    pub retry_at: Option<DateTime<Utc>>,
    pub result: Option<Value>,
    pub error: Option<String>,
}

/// A task named by its id (digits) or its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskKey {
    Id(i64),
    Name(String),
}

impl TaskKey {
    pub fn parse(s: &str) -> TaskKey {
        match s.parse() {
            Ok(id) => TaskKey::Id(id),
            Err(_) => TaskKey::Name(s.to_string()),
        }
    }
}

impl std::fmt::Display for TaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskKey::Id(id) => write!(f, "{id}"),
            TaskKey::Name(n) => write!(f, "'{n}'"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Options, RETRY_BACKOFF_CAP};
    use chrono::{DateTime, Duration};

    #[test]
    fn retries_wait_longer_each_time_up_to_the_cap_then_stop() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let o = Options {
            retries: 20,
            retry_backoff_s: 1000.0,
            ..Options::default()
        };
        let wait = |failed| o.retry_at(failed, at).map(|t| t - at);
        assert_eq!(wait(1), Some(Duration::seconds(1000)));
        assert_eq!(wait(2), Some(Duration::seconds(2000)));
        let cap = Duration::from_std(RETRY_BACKOFF_CAP).expect("cap");
        assert_eq!(wait(3), Some(cap));
        assert_eq!(wait(20), Some(cap));
        assert_eq!(wait(21), None, "spent");
        // A run recorded without an attempt number is a first attempt.
        assert_eq!(wait(0), Some(Duration::seconds(1000)));
    }
}
