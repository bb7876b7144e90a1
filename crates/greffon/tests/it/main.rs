//! The black-box tests of greffon: the real `greffon` binary, real
//! sandboxed Python workers, real HTTP, MCP, PostgreSQL and Chromium.
//! One test binary for the whole crate (one link, one process whose
//! helpers are compiled once); each module is one area, named for it.

mod common;

mod broker;
mod calls;
mod chaos;
mod dashboard;
mod discovery;
mod envs;
mod install;
mod llm;
mod mcp;
mod postgres;
mod sandbox;
mod search;
mod secrets;
mod serve;
mod tasks;
mod weather;
