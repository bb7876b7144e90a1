//! Where a command goes: a running server, through its `/v1` API
//! ([`Remote`]), or a host opened in this process for the length of the
//! command ([`Local`]). Each command is written once, against
//! [`Backend`]; both sides answer the same types, so the output does not
//! depend on whether a server runs.

use crate::remote::{self, Remote};
use anyhow::Context;
use greffon_host::Host;
use greffon_protocol::api::{PluginInfo, SecretEntry};
use greffon_scheduler::{AnyTaskStore, NewTask, Scheduler, TaskKey, TaskPatch};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// An operation's refusal (`Err(message)`, printed as the command's
/// error) inside a transport failure (a server that stopped answering).
pub(crate) type Outcome<T> = anyhow::Result<Result<T, String>>;

/// One operation on the tasks; the API's JSON comes back either way.
pub(crate) enum TaskOp<'a> {
    List,
    Get(&'a str),
    Create(Value),
    Update(&'a str, Value),
    Delete(&'a str),
    Run { task: &'a str, force: bool },
    Runs { task: &'a str, limit: u32 },
    Next { task: &'a str, n: u16 },
}

pub(crate) trait Backend {
    /// Where the plugins are, for "no plugins …": `under FOLDER` or `on
    /// the server at URL`.
    fn place(&self) -> String;
    async fn plugins(&self) -> Outcome<Vec<PluginInfo>>;
    async fn plugin(&self, name: &str) -> Outcome<PluginInfo>;
    async fn enable(&self, name: &str) -> Outcome<PluginInfo>;
    async fn disable(&self, name: &str) -> Outcome<PluginInfo>;
    /// The plugin as reloaded; None when no process runs it (a local
    /// host loads every plugin from disk anyway).
    async fn reload(&self, name: &str) -> Outcome<Option<PluginInfo>>;
    /// A run's answer as the contract prints it: the plugin's result, or
    /// `{"error": "..."}`.
    async fn run(&self, name: &str, args: Value) -> anyhow::Result<Value>;
    async fn secrets(&self, plugin: Option<&str>) -> Outcome<Vec<SecretEntry>>;
    async fn set_secret(&self, plugin: &str, name: &str, value: &str) -> Outcome<()>;
    async fn remove_secret(&self, plugin: &str, name: &str) -> Outcome<()>;
    async fn task(&self, op: TaskOp<'_>) -> Outcome<Value>;
}

/// `task` as a path segment.
fn seg(task: &str) -> String {
    url::form_urlencoded::byte_serialize(task.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl Backend for Remote {
    fn place(&self) -> String {
        format!("on the server at {}", self.url())
    }

    async fn plugins(&self) -> Outcome<Vec<PluginInfo>> {
        self.expect(Method::GET, "/v1/plugins", None).await
    }

    async fn plugin(&self, name: &str) -> Outcome<PluginInfo> {
        let path = format!("/v1/plugins/{}", seg(name));
        self.expect(Method::GET, &path, None).await
    }

    async fn enable(&self, name: &str) -> Outcome<PluginInfo> {
        let path = format!("/v1/plugins/{}/enable", seg(name));
        self.expect(Method::POST, &path, None).await
    }

    async fn disable(&self, name: &str) -> Outcome<PluginInfo> {
        let path = format!("/v1/plugins/{}/disable", seg(name));
        self.expect(Method::POST, &path, None).await
    }

    async fn reload(&self, name: &str) -> Outcome<Option<PluginInfo>> {
        let path = format!("/v1/plugins/{}/reload", seg(name));
        self.expect(Method::POST, &path, None).await
    }

    async fn run(&self, name: &str, args: Value) -> anyhow::Result<Value> {
        let path = format!("/v1/plugins/{}/run", seg(name));
        let (status, v) = self.send(Method::POST, &path, Some(&args)).await?;
        Ok(if status == 200 {
            v
        } else {
            json!({ "error": remote::error_text(&v) })
        })
    }

    async fn secrets(&self, plugin: Option<&str>) -> Outcome<Vec<SecretEntry>> {
        let path = match plugin {
            Some(p) => format!("/v1/secrets/{}", seg(p)),
            None => "/v1/secrets".into(),
        };
        self.expect(Method::GET, &path, None).await
    }

    async fn set_secret(&self, plugin: &str, name: &str, value: &str) -> Outcome<()> {
        let path = format!("/v1/secrets/{}/{}", seg(plugin), seg(name));
        let body = json!({ "value": value });
        self.expect(Method::PUT, &path, Some(&body)).await
    }

    async fn remove_secret(&self, plugin: &str, name: &str) -> Outcome<()> {
        let path = format!("/v1/secrets/{}/{}", seg(plugin), seg(name));
        self.expect(Method::DELETE, &path, None).await
    }

    async fn task(&self, op: TaskOp<'_>) -> Outcome<Value> {
        let (method, path, body) = match op {
            TaskOp::List => (Method::GET, "/v1/tasks".to_string(), None),
            TaskOp::Get(t) => (Method::GET, format!("/v1/tasks/{}", seg(t)), None),
            TaskOp::Create(b) => (Method::POST, "/v1/tasks".to_string(), Some(b)),
            TaskOp::Update(t, b) => (Method::PATCH, format!("/v1/tasks/{}", seg(t)), Some(b)),
            TaskOp::Delete(t) => (Method::DELETE, format!("/v1/tasks/{}", seg(t)), None),
            TaskOp::Run { task, force } => (
                Method::POST,
                format!("/v1/tasks/{}/run", seg(task)),
                Some(json!({ "force": force })),
            ),
            TaskOp::Runs { task, limit } => (
                Method::GET,
                format!("/v1/tasks/{}/runs?limit={limit}", seg(task)),
                None,
            ),
            TaskOp::Next { task, n } => (
                Method::GET,
                format!("/v1/tasks/{}/next?n={n}", seg(task)),
                None,
            ),
        };
        self.expect(method, &path, body.as_ref()).await
    }
}

/// A host opened by this command, and its task scheduler when the
/// command may touch tasks.
pub(crate) struct Local<'a> {
    pub host: &'a Host,
    pub tasks: Option<&'a Scheduler<AnyTaskStore>>,
}

/// A host's answer, its error as the message the command prints.
fn refused<T>(r: Result<T, impl std::fmt::Display>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

/// A scheduler's answer as the API's JSON.
fn as_json(
    r: Result<impl serde::Serialize, greffon_scheduler::TaskError>,
) -> Result<Value, String> {
    refused(r).and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string()))
}

/// A task body read as the API reads it.
fn parse<T: DeserializeOwned>(body: Value) -> Result<T, String> {
    serde_json::from_value(body).map_err(|e| format!("invalid task: {e}"))
}

impl Backend for Local<'_> {
    fn place(&self) -> String {
        format!("under {}", self.host.home().plugins_dir().display())
    }

    async fn plugins(&self) -> Outcome<Vec<PluginInfo>> {
        Ok(Ok(self.host.plugins()))
    }

    async fn plugin(&self, name: &str) -> Outcome<PluginInfo> {
        Ok(refused(self.host.plugin(name)))
    }

    async fn enable(&self, name: &str) -> Outcome<PluginInfo> {
        Ok(refused(self.host.enable(name).await))
    }

    async fn disable(&self, name: &str) -> Outcome<PluginInfo> {
        Ok(refused(self.host.disable(name).await))
    }

    async fn reload(&self, name: &str) -> Outcome<Option<PluginInfo>> {
        Ok(refused(self.host.plugin(name)).map(|_| None))
    }

    async fn run(&self, name: &str, args: Value) -> anyhow::Result<Value> {
        Ok(match self.host.call(name, args).await {
            Ok(answer) => answer,
            Err(e) => e.to_json(),
        })
    }

    async fn secrets(&self, plugin: Option<&str>) -> Outcome<Vec<SecretEntry>> {
        Ok(refused(self.host.secrets(plugin).await))
    }

    async fn set_secret(&self, plugin: &str, name: &str, value: &str) -> Outcome<()> {
        Ok(refused(self.host.set_secret(plugin, name, value).await))
    }

    async fn remove_secret(&self, plugin: &str, name: &str) -> Outcome<()> {
        Ok(refused(self.host.remove_secret(plugin, name).await))
    }

    async fn task(&self, op: TaskOp<'_>) -> Outcome<Value> {
        let s = self.tasks.context("this command opened no task store")?;
        let key = TaskKey::parse;
        Ok(match op {
            TaskOp::List => as_json(s.list().await),
            TaskOp::Get(t) => as_json(s.get(&key(t)).await),
            TaskOp::Create(b) => match parse::<NewTask>(b) {
                Ok(new) => as_json(s.create(new).await),
                Err(e) => Err(e),
            },
            TaskOp::Update(t, b) => match parse::<TaskPatch>(b) {
                Ok(patch) => as_json(s.update(&key(t), patch).await),
                Err(e) => Err(e),
            },
            TaskOp::Delete(t) => as_json(s.delete(&key(t)).await),
            TaskOp::Run { task, force } => as_json(s.run_now(&key(task), force).await),
            TaskOp::Runs { task, limit } => as_json(s.runs(&key(task), limit).await),
            TaskOp::Next { task, n } => as_json(s.next(&key(task), usize::from(n)).await),
        })
    }
}
