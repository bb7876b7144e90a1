"""Current weather and a daily forecast from Open-Meteo (no API key).

A city name is first turned into coordinates by Open-Meteo's geocoding
API, then the forecast API is asked for the current conditions and `days`
days of minimum/maximum temperature and precipitation.

How it uses greffon (docs/plugin-guide.md walks through this file):
- `permissions = ["net", "fs_read"]`: the worker has no socket; every
  request goes through `greffon.http`, which the host checks against
  `allowlist_domains` (and every redirect, and the addresses resolved);
- the upstream URLs, the per-request timeout and the cache lifetime come
  from `[plugins.weather.config]` in `greffon.toml`, so an operator (or a
  test) can point the plugin at a mirror; the host's allowlist for the
  plugin must then name that mirror (`[plugins.weather] allowlist_domains`);
- answers are cached in the worker for 10 minutes per normalized query: the
  worker lives as long as the plugin is enabled, so the cache survives
  between calls, not restarts;
- every expected failure (unknown city, upstream error, timeout, a body
  that is not what Open-Meteo sends) is returned as `{"error": "..."}`.
"""

import time

import greffon
from greffon import http
from greffon.log import get_logger

log = get_logger("plugin")

DEFAULTS = {
    "geocoding_url": "https://geocoding-api.open-meteo.com",
    "forecast_url": "https://api.open-meteo.com",
    "timeout_s": 5.0,
    "cache_ttl_s": 600.0,
}

CURRENT = (
    "temperature_2m",
    "apparent_temperature",
    "relative_humidity_2m",
    "wind_speed_10m",
    "wind_direction_10m",
    "weather_code",
)
DAILY = ("weather_code", "temperature_2m_min", "temperature_2m_max", "precipitation_sum")

# WMO weather interpretation codes, as Open-Meteo documents them.
WMO = {
    0: ("Ciel dégagé", "Clear sky"),
    1: ("Plutôt dégagé", "Mainly clear"),
    2: ("Partiellement nuageux", "Partly cloudy"),
    3: ("Couvert", "Overcast"),
    45: ("Brouillard", "Fog"),
    48: ("Brouillard givrant", "Depositing rime fog"),
    51: ("Bruine légère", "Light drizzle"),
    53: ("Bruine modérée", "Moderate drizzle"),
    55: ("Bruine dense", "Dense drizzle"),
    56: ("Bruine verglaçante légère", "Light freezing drizzle"),
    57: ("Bruine verglaçante dense", "Dense freezing drizzle"),
    61: ("Pluie faible", "Slight rain"),
    63: ("Pluie modérée", "Moderate rain"),
    65: ("Pluie forte", "Heavy rain"),
    66: ("Pluie verglaçante faible", "Light freezing rain"),
    67: ("Pluie verglaçante forte", "Heavy freezing rain"),
    71: ("Neige faible", "Slight snow fall"),
    73: ("Neige modérée", "Moderate snow fall"),
    75: ("Neige forte", "Heavy snow fall"),
    77: ("Grains de neige", "Snow grains"),
    80: ("Averses de pluie faibles", "Slight rain showers"),
    81: ("Averses de pluie modérées", "Moderate rain showers"),
    82: ("Averses de pluie violentes", "Violent rain showers"),
    85: ("Averses de neige faibles", "Slight snow showers"),
    86: ("Averses de neige fortes", "Heavy snow showers"),
    95: ("Orage", "Thunderstorm"),
    96: ("Orage avec grêle faible", "Thunderstorm with slight hail"),
    99: ("Orage avec grêle forte", "Thunderstorm with heavy hail"),
}


def describe(code, language):
    """The WMO code in words: French for `fr`, English otherwise."""
    words = WMO.get(code)
    if words is None:
        return f"code météo {code}" if language == "fr" else f"weather code {code}"
    return words[0] if language == "fr" else words[1]


class UpstreamError(Exception):
    """A failure worth telling the user; the message says what happened."""


class Plugin:
    meta = {
        "name": "weather",
        "description": "Current weather and daily forecast for a city or coordinates (Open-Meteo).",
        "permissions": ["net", "fs_read"],
        "allowlist_domains": ["geocoding-api.open-meteo.com", "api.open-meteo.com"],
        "inputs": {
            "schema": {
                "city": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 100,
                    "required": False,
                    "description": "city name, e.g. 'Paris'; or give latitude and longitude",
                },
                "latitude": {"type": "number", "minimum": -90, "maximum": 90, "required": False},
                "longitude": {"type": "number", "minimum": -180, "maximum": 180, "required": False},
                "days": {"type": "integer", "minimum": 1, "maximum": 16, "default": 1},
                "units": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
                "language": {
                    "type": "string",
                    "pattern": "^[a-z]{2}$",
                    "default": "fr",
                    "description": "two-letter code for place names and descriptions (fr, en, ...)",
                },
            }
        },
        # Two upstream requests of at most 5 s each, plus margin.
        "timeout": 15,
    }

    def __init__(self):
        self.settings = dict(DEFAULTS)
        # normalized query -> (expiry on the monotonic clock, answer)
        self.cache = {}

    def start(self):
        self.settings = {**DEFAULTS, **greffon.config()}

    def run(self, city=None, latitude=None, longitude=None, days=1, units="celsius", language="fr"):
        if city is not None and not city.strip():
            return {"error": "city must not be blank"}
        if city is None and (latitude is None or longitude is None):
            return {"error": "give a city, or both latitude and longitude"}
        key = (
            city.strip().casefold() if city is not None else None,
            None if city is not None else (round(latitude, 4), round(longitude, 4)),
            days,
            units,
            language,
        )
        now = time.monotonic()
        hit = self.cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            if city is not None:
                location = self.geocode(city.strip(), language)
            else:
                location = {"name": None, "country": None, "latitude": latitude, "longitude": longitude}
            answer = self.forecast(location, days, units, language)
        except UpstreamError as e:
            return {"error": str(e)}
        # Expired entries go when a new answer is stored, so the cache
        # holds at most what was asked in the last ten minutes.
        self.cache = {k: v for k, v in self.cache.items() if v[0] > now}
        self.cache[key] = (now + float(self.settings["cache_ttl_s"]), answer)
        return answer

    def get_json(self, service, base, path, params):
        """GET `base + path` and decode its JSON, or raise UpstreamError."""
        try:
            r = http.get(base.rstrip("/") + path, params=params, timeout=float(self.settings["timeout_s"]))
        except http.Timeout:
            raise UpstreamError(
                f"the {service} service did not answer within {self.settings['timeout_s']:g} s; try again later"
            ) from None
        except PermissionError as e:
            raise UpstreamError(f"the {service} service may not be reached: {e}") from None
        except http.RequestError as e:
            raise UpstreamError(f"the {service} service could not be reached: {e}") from None
        if r.status_code != 200:
            reason = ""
            try:
                reason = r.json().get("reason") or ""
            except (ValueError, AttributeError):
                pass
            log.warning("%s answered HTTP %s: %s", service, r.status_code, reason or r.text[:200])
            detail = f": {reason}" if reason else ""
            raise UpstreamError(f"the {service} service answered HTTP {r.status_code}{detail}")
        try:
            data = r.json()
        except ValueError:
            raise UpstreamError(f"the {service} service sent an answer that is not JSON") from None
        if not isinstance(data, dict):
            raise UpstreamError(f"the {service} service sent an unexpected answer")
        return data

    def geocode(self, city, language):
        data = self.get_json(
            "geocoding",
            self.settings["geocoding_url"],
            "/v1/search",
            {"name": city, "count": 1, "language": language, "format": "json"},
        )
        results = data.get("results")
        if not results:
            raise UpstreamError(f"no place called '{city}' was found")
        place = results[0]
        try:
            return {
                "name": place["name"],
                "country": place.get("country"),
                "latitude": float(place["latitude"]),
                "longitude": float(place["longitude"]),
            }
        except (KeyError, TypeError, ValueError):
            raise UpstreamError("the geocoding service sent a place without a name or coordinates") from None

    def forecast(self, location, days, units, language):
        data = self.get_json(
            "forecast",
            self.settings["forecast_url"],
            "/v1/forecast",
            {
                "latitude": location["latitude"],
                "longitude": location["longitude"],
                "current": ",".join(CURRENT),
                "daily": ",".join(DAILY),
                "forecast_days": days,
                "temperature_unit": units,
                "timezone": "auto",
            },
        )
        try:
            current, cu = data["current"], data["current_units"]
            daily, du = data["daily"], data["daily_units"]
            conditions = {
                "time": current["time"],
                "temperature": current["temperature_2m"],
                "apparent_temperature": current["apparent_temperature"],
                "humidity": current["relative_humidity_2m"],
                "wind_speed": current["wind_speed_10m"],
                "wind_direction": current["wind_direction_10m"],
                "weather_code": current["weather_code"],
                "description": describe(current["weather_code"], language),
                "units": {
                    "temperature": cu["temperature_2m"],
                    "humidity": cu["relative_humidity_2m"],
                    "wind_speed": cu["wind_speed_10m"],
                    "wind_direction": cu["wind_direction_10m"],
                },
            }
            forecast = [
                {
                    "date": day,
                    "min": daily["temperature_2m_min"][i],
                    "max": daily["temperature_2m_max"][i],
                    "precipitation": daily["precipitation_sum"][i],
                    "weather_code": daily["weather_code"][i],
                    "description": describe(daily["weather_code"][i], language),
                }
                for i, day in enumerate(daily["time"])
            ]
            units_daily = {"temperature": du["temperature_2m_max"], "precipitation": du["precipitation_sum"]}
            timezone = data["timezone"]
        except KeyError as e:
            raise UpstreamError(f"the forecast service sent an answer without the field {e}") from None
        except (IndexError, TypeError):
            raise UpstreamError("the forecast service sent an answer in an unexpected shape") from None
        return {
            "location": {**location, "timezone": timezone},
            "current": conditions,
            "daily": forecast,
            "daily_units": units_daily,
        }


plugin = Plugin()
