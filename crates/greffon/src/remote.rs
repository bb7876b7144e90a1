//! The CLI as a client of a running `greffon serve`, so that plugin
//! commands see and change the live state.

use anyhow::Context;
use greffon_core::Home;
use serde_json::Value;

/// Where a running server is and how to authenticate to it.
#[derive(Debug)]
pub struct Server {
    /// Its base URL, without a trailing slash.
    pub base: String,
    pub token: String,
}

impl Server {
    /// `--remote URL`, else the live server named in `app/server.json`,
    /// else none (the CLI works embedded).
    pub fn find(home: &Home, flag: Option<&str>) -> anyhow::Result<Option<Server>> {
        let base = match flag {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                match greffon_server::Endpoint::read_live(&home.app_dir().join("server.json")) {
                    Some(e) => e.url,
                    None => return Ok(None),
                }
            }
        };
        let token = match std::env::var("GREFFON_TOKEN") {
            Ok(t) if !t.is_empty() => t,
            _ => {
                let file = home.app_dir().join("token");
                std::fs::read_to_string(&file)
                    .with_context(|| {
                        format!(
                            "cannot read the server's token in {} (or set GREFFON_TOKEN)",
                            file.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        Ok(Some(Server { base, token }))
    }
}

/// A server to talk to, with the client for its `/v1` API.
#[derive(Debug)]
pub struct Remote {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Remote {
    /// [`Server::find`], with a client for it.
    pub fn find(home: &Home, flag: Option<&str>) -> anyhow::Result<Option<Remote>> {
        let Some(Server { base, token }) = Server::find(home, flag)? else {
            return Ok(None);
        };
        let client = greffon_host::server_client(&base)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Some(Remote {
            client,
            base,
            token,
        }))
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// One request: (status, JSON body).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the greffon server at {}", self.base))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.context("the server's answer was cut")?;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, value))
    }

    /// One request whose answer, on a 2xx status, reads as `T`; any other
    /// status is the server's error message.
    pub async fn expect<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Result<T, String>> {
        let (status, v) = self.send(method, path, body).await?;
        if !(200..300).contains(&status) {
            return Ok(Err(error_text(&v)));
        }
        // A 204 has no body: `()` reads from null.
        let v = if status == 204 { Value::Null } else { v };
        let what = std::any::type_name::<T>();
        Ok(Ok(serde_json::from_value(v).with_context(|| {
            format!("the server answered {path} with something other than a {what}")
        })?))
    }
}

/// The `error` of a `{"error", "kind"}` answer.
pub fn error_text(v: &Value) -> String {
    v["error"]
        .as_str()
        .map_or_else(|| v.to_string(), str::to_string)
}
