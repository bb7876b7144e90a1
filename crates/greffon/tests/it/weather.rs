//! The bundled `weather` plugin, sandboxed, against a local server that
//! answers like Open-Meteo (geocoding `results`, forecast `current` /
//! `current_units` / `daily`): the parsed output field by field, the query
//! sent upstream, the cache, the timeout, every error path, and the
//! broker's refusal when the allowlist is left at its default.

use crate::common;

use common::TestHome;
use common::server::start;
use common::upstream::{Request, Response, Upstream, pointed_at};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GEOCODING: &str = include_str!("../fixtures/open-meteo/geocoding-paris.json");
const NO_PLACE: &str = include_str!("../fixtures/open-meteo/geocoding-empty.json");
const FORECAST: &str = include_str!("../fixtures/open-meteo/forecast-paris.json");
const BAD_REQUEST: &str = include_str!("../fixtures/open-meteo/error-400.json");

/// A fake Open-Meteo. Geocoding knows "Paris", answers "Slowville" late,
/// and places "Errorville", "Brokenville" and "Fieldless" at latitudes for
/// which the forecast answers an HTTP 400 like Open-Meteo's, a body cut
/// short, and JSON without `current`. Every request is kept.
fn open_meteo() -> (Upstream, Arc<Mutex<Vec<Request>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let upstream = Upstream::start(move |req| {
        log.lock().expect("lock").push(req.clone());
        let q = req.query();
        let path = req.target.split('?').next().unwrap_or("");
        let json = |body: &str| Response::new(200, "application/json; charset=utf-8", body);
        let place_at = |name: &str, lat: &str| {
            json(
                &GEOCODING
                    .replace("\"name\":\"Paris\"", &format!("\"name\":\"{name}\""))
                    .replace("\"latitude\":48.85341", &format!("\"latitude\":{lat}")),
            )
        };
        match (path, q.get("name").map(String::as_str)) {
            ("/v1/search", Some("Paris")) => json(GEOCODING),
            ("/v1/search", Some("Slowville")) => Response {
                delay: Duration::from_secs(3),
                ..json(GEOCODING)
            },
            ("/v1/search", Some("Errorville")) => place_at("Errorville", "91.5"),
            ("/v1/search", Some("Brokenville")) => place_at("Brokenville", "12.5"),
            ("/v1/search", Some("Fieldless")) => place_at("Fieldless", "13.5"),
            ("/v1/search", _) => json(NO_PLACE),
            ("/v1/forecast", _) => match q.get("latitude").map(String::as_str) {
                Some("91.5") => Response::new(400, "application/json; charset=utf-8", BAD_REQUEST),
                Some("12.5") => json(&FORECAST[..FORECAST.len() / 2]),
                Some("13.5") => json(r#"{"latitude":13.5,"timezone":"GMT"}"#),
                _ => json(FORECAST),
            },
            _ => Response::new(404, "text/plain", "not found"),
        }
    });
    (upstream, seen)
}

/// The bundled plugin, pointed at `upstream` (see `pointed_at`).
fn home_for(upstream: &Upstream, allow: bool, extra: &str) -> TestHome {
    pointed_at(
        "weather",
        upstream,
        &["geocoding_url", "forecast_url"],
        allow,
        extra,
    )
}

fn weather(home: &TestHome, args: Value) -> Value {
    let (code, v) = home.run("weather", &args.to_string());
    assert_eq!(code, 0, "{v}");
    v
}

#[test]
fn a_city_gives_location_current_conditions_and_daily_forecast() {
    let (upstream, seen) = open_meteo();
    let home = home_for(&upstream, true, "");
    let v = weather(&home, json!({"city": "Paris", "days": 3}));

    assert_eq!(
        v["location"],
        json!({"name": "Paris", "country": "France", "latitude": 48.85341,
               "longitude": 2.3488, "timezone": "Europe/Paris"})
    );
    let c = &v["current"];
    assert_eq!(c["time"], "2026-11-25T17:00");
    assert_eq!(c["temperature"], 8.1);
    assert_eq!(c["apparent_temperature"], 5.2);
    assert_eq!(c["humidity"], 81);
    assert_eq!(c["wind_speed"], 12.3);
    assert_eq!(c["wind_direction"], 230);
    assert_eq!(c["weather_code"], 3);
    assert_eq!(c["description"], "Couvert", "French by default");
    assert_eq!(
        c["units"],
        json!({"temperature": "°C", "humidity": "%", "wind_speed": "km/h", "wind_direction": "°"})
    );
    let daily = v["daily"].as_array().expect("daily list");
    assert_eq!(daily.len(), 3);
    assert_eq!(
        daily[1],
        json!({"date": "2026-11-26", "min": 5.0, "max": 10.2, "precipitation": 2.3,
               "weather_code": 61, "description": "Pluie faible"})
    );
    assert_eq!(daily[2]["description"], "Orage");
    assert_eq!(
        v["daily_units"],
        json!({"temperature": "°C", "precipitation": "mm"})
    );

    // What went upstream: geocoding, then the forecast at its coordinates.
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 2);
    let geo = seen[0].query();
    assert!(
        seen[0].target.starts_with("/v1/search?"),
        "{}",
        seen[0].target
    );
    assert_eq!(geo["name"], "Paris");
    assert_eq!(geo["count"], "1");
    assert_eq!(geo["language"], "fr");
    let fc = seen[1].query();
    assert!(
        seen[1].target.starts_with("/v1/forecast?"),
        "{}",
        seen[1].target
    );
    assert_eq!(fc["latitude"], "48.85341");
    assert_eq!(fc["longitude"], "2.3488");
    assert_eq!(fc["forecast_days"], "3");
    assert_eq!(fc["timezone"], "auto");
    assert_eq!(fc["temperature_unit"], "celsius");
    for field in [
        "temperature_2m",
        "apparent_temperature",
        "relative_humidity_2m",
        "wind_speed_10m",
        "weather_code",
    ] {
        assert!(fc["current"].split(',').any(|f| f == field), "{field}");
    }
    for field in [
        "temperature_2m_min",
        "temperature_2m_max",
        "precipitation_sum",
    ] {
        assert!(fc["daily"].split(',').any(|f| f == field), "{field}");
    }
}

#[test]
fn coordinates_skip_geocoding_and_options_reach_the_upstream() {
    let (upstream, seen) = open_meteo();
    let home = home_for(&upstream, true, "");
    let v = weather(
        &home,
        json!({"latitude": 48.86, "longitude": 2.34, "units": "fahrenheit", "language": "en"}),
    );
    assert_eq!(v["location"]["name"], Value::Null);
    assert_eq!(v["location"]["latitude"], 48.86);
    assert_eq!(v["location"]["timezone"], "Europe/Paris");
    assert_eq!(v["current"]["description"], "Overcast");
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 1, "no geocoding request");
    let fc = seen[0].query();
    assert_eq!(fc["temperature_unit"], "fahrenheit");
    assert_eq!(fc["forecast_days"], "1", "days defaults to 1");
}

#[test]
fn bad_inputs_are_refused_naming_the_field() {
    let (upstream, seen) = open_meteo();
    let home = home_for(&upstream, true, "");
    let days = home.run_error("weather", r#"{"city": "Paris", "days": 17}"#);
    assert!(days.contains("days"), "{days}");
    let units = home.run_error("weather", r#"{"city": "Paris", "units": "kelvin"}"#);
    assert!(units.contains("units"), "{units}");
    let neither = home.run_error("weather", r#"{"latitude": 48.8}"#);
    assert!(neither.contains("latitude and longitude"), "{neither}");
    let blank = home.run_error("weather", r#"{"city": "  "}"#);
    assert!(blank.contains("blank"), "{blank}");
    assert!(
        seen.lock().expect("lock").is_empty(),
        "nothing reached upstream"
    );
}

#[test]
fn every_upstream_failure_is_a_clear_error() {
    let (upstream, _) = open_meteo();
    let home = home_for(&upstream, true, "timeout_s = 0.5\n");
    let cases = [
        ("Atlantis", "no place called 'Atlantis' was found"),
        (
            "Slowville",
            "the geocoding service did not answer within 0.5 s; try again later",
        ),
        (
            "Errorville",
            "the forecast service answered HTTP 400: Latitude must be in range of -90 to 90°. Given: 91.5.",
        ),
        (
            "Brokenville",
            "the forecast service sent an answer that is not JSON",
        ),
        (
            "Fieldless",
            "the forecast service sent an answer without the field 'current'",
        ),
    ];
    for (city, expected) in cases {
        let got = home.run_error("weather", &json!({ "city": city }).to_string());
        assert_eq!(got, expected, "{city}");
    }
    // A failure is not cached: the same query asks again.
    let before = upstream.hits();
    home.run_error("weather", r#"{"city": "Atlantis"}"#);
    assert_eq!(upstream.hits(), before + 1);
}

#[test]
fn answers_are_cached_per_normalized_query_until_they_expire() {
    let (upstream, _) = open_meteo();
    let ttl = Duration::from_millis(1500);
    let home = home_for(&upstream, true, "cache_ttl_s = 1.5\n");
    // Through a running server, so every call reaches the same worker.
    let _server = start(&home);
    let first = Instant::now();
    let a = weather(&home, json!({"city": "Paris"}));
    assert_eq!(upstream.hits(), 2, "geocoding and forecast");
    let b = weather(&home, json!({"city": "  pARIS "}));
    assert!(
        first.elapsed() < ttl,
        "the second call came after the cache lifetime; the test proves nothing"
    );
    assert_eq!(
        upstream.hits(),
        2,
        "the second call made no upstream request"
    );
    assert_eq!(a, b);
    // Other options are another query.
    weather(&home, json!({"city": "Paris", "language": "en"}));
    assert_eq!(upstream.hits(), 4);
    // Waiting out the lifetime is the behaviour under test, not a delay
    // hoping for something else to finish.
    std::thread::sleep(ttl.saturating_sub(first.elapsed()) + Duration::from_millis(100));
    weather(&home, json!({"city": "Paris"}));
    assert_eq!(upstream.hits(), 6, "expired: asked again");
}

#[test]
fn the_default_allowlist_refuses_the_local_server() {
    let (upstream, _) = open_meteo();
    let home = home_for(&upstream, false, "");
    let info = home.info("weather");
    assert!(
        info.to_string().contains("geocoding-api.open-meteo.com"),
        "{info}"
    );
    let refused = home.run_error("weather", r#"{"city": "Paris"}"#);
    assert!(
        refused.starts_with("the geocoding service may not be reached:"),
        "{refused}"
    );
    assert!(refused.contains("allowlist"), "{refused}");
    assert_eq!(upstream.hits(), 0, "no request reached the server");
}
