//! The three kinds of message, JSON-RPC style.
//!
//! Both sides send requests (the host asks the worker to `run`; the worker
//! asks the host for a service mid-call), so ids are per direction: a
//! response always answers a request the receiver sent.

use crate::error::WireError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `{"id", "method", "params"}`: expects exactly one response.
    Request {
        id: u64,
        method: String,
        params: Value,
        /// Worker → host only: the calling thread is the one serving the
        /// host's request on the main channel, and reads the answer there
        /// itself (no hand-off between worker threads).
        reply_on_main: bool,
    },
    /// `{"id", "result" | "error", "output"?}`.
    Response {
        id: u64,
        body: ResponseBody,
        /// What the plugin printed while serving this request.
        output: Option<Output>,
    },
    /// `{"method", "params"}` without an id: no response.
    Notification { method: String, params: Value },
}

/// The outcome half of a response.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseBody {
    Ok(Value),
    Err(WireError),
}

/// The plugin's stdout/stderr captured during one request, bounded by the
/// worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Output {
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    /// Bytes the worker dropped because the capture limit was reached.
    #[serde(default)]
    pub dropped: u64,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.stdout.is_empty() && self.stderr.is_empty() && self.dropped == 0
    }
}

/// The flat form on the wire; every message is one of its valid subsets.
#[derive(Serialize, Deserialize)]
struct Raw {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params: Option<Value>,
    // `result: null` is a valid result, so presence is tracked separately.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "present")]
    result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<WireError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<Output>,
    #[serde(default, skip_serializing_if = "is_false")]
    main: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

/// Distinguishes a missing `result` from `"result": null`.
mod present {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(v: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().unwrap_or(&Value::Null).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        Value::deserialize(d).map(Some)
    }
}

impl Message {
    /// Serializes to a JSON body (without the length prefix).
    pub fn to_json(&self) -> Vec<u8> {
        let raw = match self {
            Message::Request {
                id,
                method,
                params,
                reply_on_main,
            } => Raw {
                id: Some(*id),
                method: Some(method.clone()),
                params: Some(params.clone()),
                main: *reply_on_main,
                result: None,
                error: None,
                output: None,
            },
            Message::Response { id, body, output } => {
                let (result, error) = match body {
                    ResponseBody::Ok(v) => (Some(v.clone()), None),
                    ResponseBody::Err(e) => (None, Some(e.clone())),
                };
                Raw {
                    id: Some(*id),
                    method: None,
                    params: None,
                    result,
                    error,
                    output: output.clone(),
                    main: false,
                }
            }
            Message::Notification { method, params } => Raw {
                id: None,
                method: Some(method.clone()),
                params: Some(params.clone()),
                result: None,
                error: None,
                output: None,
                main: false,
            },
        };
        // A Raw holds only strings, numbers and JSON values: it always
        // serializes.
        serde_json::to_vec(&raw).unwrap_or_default()
    }

    /// Parses a JSON body and checks that it is one of the three shapes.
    pub fn from_json(body: &[u8]) -> Result<Message, String> {
        let raw: Raw = serde_json::from_slice(body).map_err(|e| format!("invalid frame: {e}"))?;
        match (raw.id, raw.method, raw.result, raw.error) {
            (Some(id), Some(method), None, None) => Ok(Message::Request {
                id,
                method,
                params: raw.params.unwrap_or(Value::Null),
                reply_on_main: raw.main,
            }),
            (None, Some(method), None, None) => Ok(Message::Notification {
                method,
                params: raw.params.unwrap_or(Value::Null),
            }),
            (Some(id), None, Some(result), None) => Ok(Message::Response {
                id,
                body: ResponseBody::Ok(result),
                output: raw.output,
            }),
            (Some(id), None, None, Some(error)) => Ok(Message::Response {
                id,
                body: ResponseBody::Err(error),
                output: raw.output,
            }),
            _ => Err("invalid frame: not a request, response or notification".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde_json::json;

    fn round_trip(m: Message) {
        let back = Message::from_json(&m.to_json()).expect("decodes");
        assert_eq!(back, m);
    }

    #[test]
    fn every_shape_round_trips() {
        round_trip(Message::Request {
            id: 7,
            method: "run".into(),
            params: json!({"args": {"x": 1}}),
            reply_on_main: false,
        });
        round_trip(Message::Request {
            id: 8,
            method: "http.request".into(),
            params: json!({}),
            reply_on_main: true,
        });
        round_trip(Message::Response {
            id: 7,
            body: ResponseBody::Ok(Value::Null),
            output: Some(Output {
                stdout: "hi\n".into(),
                stderr: String::new(),
                dropped: 3,
            }),
        });
        round_trip(Message::Response {
            id: 8,
            body: ResponseBody::Err(WireError::new(ErrorKind::Exception, "boom")),
            output: None,
        });
        round_trip(Message::Notification {
            method: "log".into(),
            params: json!({"message": "x"}),
        });
    }

    #[test]
    fn null_result_is_a_result() {
        let m = Message::from_json(br#"{"id":1,"result":null}"#).expect("decodes");
        assert_eq!(
            m,
            Message::Response {
                id: 1,
                body: ResponseBody::Ok(Value::Null),
                output: None
            }
        );
    }

    #[test]
    fn ambiguous_or_garbage_frames_are_refused() {
        assert!(Message::from_json(b"not json").is_err());
        assert!(Message::from_json(b"[1,2]").is_err());
        assert!(Message::from_json(br#"{"id":1}"#).is_err());
        assert!(
            Message::from_json(
                br#"{"id":1,"result":1,"error":{"kind":"exception","message":"x"}}"#
            )
            .is_err()
        );
        assert!(Message::from_json(br#"{"id":1,"method":"run","result":1}"#).is_err());
    }
}
