//! What a caller asks (a prompt and options) and what it gets back.

use crate::LlmError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Generation options. Every field is optional; unknown ones are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferOptions {
    /// Most tokens to generate (default 256).
    pub max_tokens: Option<u32>,
    /// 0 (the default) is greedy: the same prompt gives the same answer.
    /// Up to 2.
    pub temperature: Option<f32>,
    /// Nucleus sampling, in (0, 1] (default 0.95; unused when greedy).
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens; 0 turns it off (default 40).
    pub top_k: Option<u32>,
    /// Sampling seed: the same seed and options give the same text.
    /// Unset: a new seed each time.
    pub seed: Option<u32>,
    /// Penalty for repeating recent tokens, in (0, 2]; 1 (the default) is off.
    pub repeat_penalty: Option<f32>,
    /// Generation stops before any of these strings (at most 8).
    pub stop: Option<Vec<String>>,
    /// The system message (default: none).
    pub system: Option<String>,
}

pub const DEFAULT_MAX_TOKENS: u32 = 256;
const MAX_STOPS: usize = 8;

impl InferOptions {
    /// Reads options from JSON; an unknown key or a wrong type names the
    /// option.
    pub fn from_json(v: Value) -> Result<InferOptions, LlmError> {
        let mut v = if v.is_null() {
            Value::Object(Default::default())
        } else {
            v
        };
        if let Some(map) = v.as_object_mut() {
            greffon_protocol::integral_floats(map, &["max_tokens", "top_k", "seed"]);
        }
        let options: InferOptions = serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // An unknown key is named by serde's own message.
            let option = if path == "." { String::new() } else { path };
            LlmError::InvalidOption {
                option,
                message: inner,
            }
        })?;
        options.check()?;
        Ok(options)
    }

    /// Range checks; each refusal names the option.
    pub fn check(&self) -> Result<(), LlmError> {
        let bad = |option: &str, message: String| {
            Err(LlmError::InvalidOption {
                option: option.to_string(),
                message,
            })
        };
        if self.max_tokens == Some(0) {
            return bad("max_tokens", "must be at least 1".into());
        }
        if let Some(t) = self.temperature
            && !(t.is_finite() && (0.0..=2.0).contains(&t))
        {
            return bad(
                "temperature",
                format!("{t} is out of range (0 to 2; 0 is greedy)"),
            );
        }
        if let Some(p) = self.top_p
            && !(p.is_finite() && p > 0.0 && p <= 1.0)
        {
            return bad("top_p", format!("{p} is out of range (above 0, at most 1)"));
        }
        if let Some(r) = self.repeat_penalty
            && !(r.is_finite() && r > 0.0 && r <= 2.0)
        {
            return bad(
                "repeat_penalty",
                format!("{r} is out of range (above 0, at most 2)"),
            );
        }
        if let Some(stops) = &self.stop {
            if stops.len() > MAX_STOPS {
                return bad("stop", format!("at most {MAX_STOPS} strings"));
            }
            if stops.iter().any(String::is_empty) {
                return bad("stop", "an empty string would stop at once".into());
            }
        }
        Ok(())
    }

    pub fn max_tokens(&self) -> u32 {
        self.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)
    }

    pub fn temperature(&self) -> f32 {
        self.temperature.unwrap_or(0.0)
    }

    pub fn stops(&self) -> &[String] {
        self.stop.as_deref().unwrap_or_default()
    }
}

/// One request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    pub prompt: String,
    #[serde(default)]
    pub options: InferOptions,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its answer.
    Stop,
    /// `max_tokens` reached, or the context is full.
    Length,
    /// One of the `stop` strings came (it is not part of the text).
    StopString,
}

/// The full answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub text: String,
    pub finish_reason: FinishReason,
    pub model: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Waiting for the model (queue).
    pub queue_ms: f64,
    /// Reading the prompt.
    pub prompt_ms: f64,
    /// Generating the answer.
    pub generation_ms: f64,
    /// From the start of the prompt to the first token of the answer.
    pub first_token_ms: f64,
}

impl Answer {
    /// Generated tokens per second (0 when none).
    pub fn tokens_per_s(&self) -> f64 {
        if self.generation_ms > 0.0 {
            f64::from(self.completion_tokens) * 1000.0 / self.generation_ms
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(v: Value) -> (String, String) {
        match InferOptions::from_json(v) {
            Err(LlmError::InvalidOption { option, message }) => (option, message),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_option() {
        let (_, m) = refused(json!({"max_token": 5}));
        assert!(m.contains("max_token"), "{m}");
        let (o, _) = refused(json!({"max_tokens": -1}));
        assert_eq!(o, "max_tokens");
        let (o, _) = refused(json!({"max_tokens": 0}));
        assert_eq!(o, "max_tokens");
        let (o, m) = refused(json!({"temperature": 3.5}));
        assert_eq!(o, "temperature");
        assert!(m.contains("3.5"), "{m}");
        let (o, _) = refused(json!({"top_p": 0}));
        assert_eq!(o, "top_p");
        let (o, _) = refused(json!({"stop": [""]}));
        assert_eq!(o, "stop");
        let (o, _) = refused(json!({"seed": "x"}));
        assert_eq!(o, "seed");
        let ok = InferOptions::from_json(json!({"max_tokens": 5, "temperature": 0.7, "seed": 3}))
            .expect("valid");
        assert_eq!(ok.max_tokens(), 5);
        assert_eq!(
            InferOptions::from_json(Value::Null)
                .expect("none")
                .max_tokens(),
            256
        );
    }

    /// Found by schemathesis: `27.0` is an integer to JSON Schema.
    #[test]
    fn integral_floats_are_integers_and_fractions_are_not() {
        let ok = InferOptions::from_json(json!({"max_tokens": 5.0, "seed": 27.0, "top_k": 0.0}))
            .expect("valid");
        assert_eq!((ok.max_tokens(), ok.seed, ok.top_k), (5, Some(27), Some(0)));
        let (o, _) = refused(json!({"seed": 2.5}));
        assert_eq!(o, "seed");
        let (o, _) = refused(json!({"max_tokens": 5e12}));
        assert_eq!(o, "max_tokens");
    }
}
