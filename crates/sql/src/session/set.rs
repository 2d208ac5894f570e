//! Statements about the session itself, which need no transaction: `SET`, `SET LOCAL`,
//! `RESET`, `SHOW`, `SHOW ALL`, `SET TRANSACTION`, `USE`, `DISCARD`, `DEALLOCATE`, and the
//! `VACUUM`/`ANALYZE` no-ops.
//!
//! The variables and what values they take are in `vars.rs`; here they are stored (one value
//! per entry of [`vars::VARS`], in its order) and changed. `SET LOCAL` keeps the value it
//! replaced and puts it back when the block ends.

use std::time::Duration;

use sqlparser::ast;

use super::vars::{self, VARS};
use super::{text_column, text_rows, Output, Session};
use crate::catalog;
use crate::error::{Error, Result};
use crate::planner::{ident, name_parts};
use crate::types::Datum;

/// The values of a new session's variables, in [`VARS`] order.
pub(super) fn default_settings() -> Vec<String> {
    VARS.iter().map(|v| v.default.to_string()).collect()
}

fn index_of(name: &str) -> Option<usize> {
    VARS.iter().position(|v| v.name == name)
}

/// The text of a `SET` value: a string's contents, an identifier, a number as written.
fn value_text(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        ast::Expr::Identifier(i) => ident(i),
        other => other.to_string(),
    }
}

impl Session {
    /// The value of variable `name` (as [`VARS`] spells it).
    pub(super) fn setting(&self, name: &str) -> &str {
        index_of(name)
            .and_then(|i| self.settings.get(i))
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// `statement_timeout` in force.
    pub fn statement_timeout(&self) -> Option<Duration> {
        vars::as_duration(self.setting("statement_timeout"))
    }

    /// `idle_in_transaction_session_timeout` in force.
    pub fn idle_in_transaction_timeout(&self) -> Option<Duration> {
        vars::as_duration(self.setting("idle_in_transaction_session_timeout"))
    }

    /// Sets a variable (checked; `local`: until the block ends).
    pub(super) fn set_var(&mut self, name: &str, value: &str, local: bool) -> Result<()> {
        let var = vars::lookup(name)?;
        let canonical = var.check(value)?;
        match var.name {
            "transaction_read_only" => return self.set_read_only(canonical == "on"),
            "transaction_isolation" if !self.in_block => {
                return Err(Error::NoActiveTransaction("SET transaction_isolation"))
            }
            _ => {}
        }
        let i = index_of(var.name).expect("a listed variable");
        let old = std::mem::replace(&mut self.settings[i], canonical);
        if local {
            self.local_undo.push((i, old));
        }
        Ok(())
    }

    /// Puts back what `SET LOCAL` changed (the block ended).
    pub(super) fn undo_local_settings(&mut self) {
        while let Some((i, old)) = self.local_undo.pop() {
            self.settings[i] = old;
        }
    }

    /// Sets every variable back to its default (`RESET ALL`, `DISCARD ALL`).
    fn reset_all(&mut self) {
        self.settings = default_settings();
        self.local_undo.clear();
    }

    async fn use_database(&mut self, name: String) -> Result<()> {
        if !catalog::database_exists(&self.db, &name).await? {
            return Err(Error::UndefinedDatabase(name));
        }
        self.database = name;
        Ok(())
    }

    /// Runs `stmt` if it is about the session; `None` if it is not.
    pub(super) async fn session_statement(
        &mut self,
        stmt: &ast::Statement,
    ) -> Result<Option<Output>> {
        use ast::Statement as S;
        let set = || Ok(Some(Output::Command("SET".into())));
        match stmt {
            S::Set(ast::Set::SingleAssignment {
                scope,
                variable,
                values,
                ..
            }) => {
                let local = match scope {
                    None | Some(ast::ContextModifier::Session) => false,
                    Some(ast::ContextModifier::Local) if self.in_block => true,
                    Some(ast::ContextModifier::Local) => {
                        return Err(Error::NoActiveTransaction("SET LOCAL"))
                    }
                    Some(ast::ContextModifier::Global) => {
                        return Err(Error::FeatureNotSupported("SET GLOBAL".into()))
                    }
                };
                let name = vars::canonical_name(&variable.to_string());
                let text: Vec<String> = values.iter().map(value_text).collect();
                if name == "database" {
                    self.use_database(text.join(", ")).await?;
                    return set();
                }
                let default = matches!(text.as_slice(), [d] if d.eq_ignore_ascii_case("default"));
                let value = if default {
                    vars::lookup(&name)?.default.to_string()
                } else {
                    text.join(", ")
                };
                self.set_var(&name, &value, local)?;
                set()
            }
            S::Set(ast::Set::SetTimeZone { local, value }) => {
                if *local && !self.in_block {
                    return Err(Error::NoActiveTransaction("SET LOCAL"));
                }
                self.set_var("timezone", &value_text(value), *local && self.in_block)?;
                set()
            }
            S::Set(ast::Set::SetNames {
                charset_name,
                collation_name,
            }) => {
                if collation_name.is_some() {
                    return Err(Error::FeatureNotSupported("SET NAMES … COLLATE".into()));
                }
                self.set_var("client_encoding", &charset_name.to_string(), false)?;
                set()
            }
            S::Set(ast::Set::SetTransaction {
                modes,
                snapshot,
                session,
            }) => self
                .set_transaction(modes, snapshot.is_some(), *session)
                .map(Some),
            S::Set(other) => Err(Error::FeatureNotSupported(format!("{other}"))),
            S::Reset(r) => {
                match &r.reset {
                    ast::Reset::ALL => self.reset_all(),
                    ast::Reset::ConfigurationParameter(n) => {
                        let name = vars::canonical_name(&n.to_string());
                        let var = vars::lookup(&name)?;
                        self.set_var(var.name, var.default, false)?;
                    }
                    ast::Reset::SessionAuthorization => {
                        return Err(Error::FeatureNotSupported(
                            "RESET SESSION AUTHORIZATION".into(),
                        ))
                    }
                }
                Ok(Some(Output::Command("RESET".into())))
            }
            S::Use(ast::Use::Object(n)) | S::Use(ast::Use::Database(n)) => {
                self.use_database(name_parts(n).pop().unwrap_or_default())
                    .await?;
                set()
            }
            S::ShowVariable { variable } => {
                let written = variable.iter().map(ident).collect::<Vec<_>>().join(" ");
                if written == "all" {
                    return Ok(Some(self.show_all()));
                }
                let value = self.show(&vars::canonical_name(&written))?;
                Ok(Some(Output::Rows {
                    columns: vec![text_column(&written.replace(' ', "_"))],
                    rows: vec![vec![Datum::String(value)]],
                    tag: "SHOW",
                    cursor: None,
                }))
            }
            S::Discard { object_type } => match object_type {
                ast::DiscardObject::ALL => {
                    if self.in_block {
                        return Err(Error::ActiveTransaction(
                            "DISCARD ALL cannot run inside a transaction block".into(),
                        ));
                    }
                    self.reset_all();
                    Ok(Some(Output::Deallocate {
                        name: None,
                        tag: "DISCARD ALL",
                    }))
                }
                // bini keeps no cached plans, sequences or temporary tables: nothing to drop.
                other => Ok(Some(Output::Command(format!("DISCARD {other}")))),
            },
            // Prepared statements live in the gateway, which drops them on this output.
            S::Deallocate { name, .. } => {
                let all = name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all");
                Ok(Some(Output::Deallocate {
                    name: (!all).then(|| ident(name)),
                    tag: "DEALLOCATE",
                }))
            }
            // Garbage collection and statistics are the cluster's own business.
            S::Vacuum(_) => Ok(Some(Output::Command("VACUUM".into()))),
            S::Analyze(_) => Ok(Some(Output::Command("ANALYZE".into()))),
            _ => Ok(None),
        }
    }

    /// The value `SHOW name` reports.
    fn show(&self, name: &str) -> Result<String> {
        Ok(match name {
            "database" | "current_database" => self.database.clone(),
            "session_user" | "current_user" | "session_authorization" => self.user.clone(),
            "transaction_read_only" => (if self.reads_only() { "on" } else { "off" }).into(),
            n => match vars::READ_ONLY.iter().find(|(k, _)| *k == n) {
                Some((_, v)) => v.to_string(),
                None => {
                    let var = vars::lookup(n)?;
                    self.setting(var.name).to_string()
                }
            },
        })
    }

    /// `SHOW ALL`: every variable, its value and what it is.
    fn show_all(&self) -> Output {
        let mut rows: Vec<Vec<String>> = VARS
            .iter()
            .map(|v| {
                let value = self.show(v.name).unwrap_or_default();
                vec![v.name.to_string(), value, v.description.to_string()]
            })
            .chain(
                vars::READ_ONLY
                    .iter()
                    .map(|(k, v)| vec![k.to_string(), v.to_string(), "(read-only)".into()]),
            )
            .collect();
        rows.sort();
        text_rows(&["name", "setting", "description"], rows)
    }
}
