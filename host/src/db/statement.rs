//! What kind of statement a guest sent, decided before it reaches a database.
//!
//! Guests get prepared statements only, one per call. On top of that, wharf runs only
//! reads and writes for them: nothing that changes the connection's session (SET,
//! USE, user variables, temporary tables, named locks), controls transactions behind
//! the host's back, or touches the server's files. Pooled connections stay clean
//! without a reset round trip, and a read can never write.

use super::DbError;

/// Which call the statement came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Query,
    Execute,
}

/// Statements that only read.
const READS: &[&str] = &[
    "SELECT", "WITH", "SHOW", "EXPLAIN", "DESCRIBE", "DESC", "VALUES", "TABLE",
];
/// Statements that write data or schema.
const WRITES: &[&str] = &[
    "INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "ALTER", "DROP", "TRUNCATE", "RENAME",
];
/// Statements wharf never runs for guests: session and transaction control, server
/// administration, files, and SQLite's connection-level commands.
const REFUSED: &[&str] = &[
    "SET",
    "USE",
    "BEGIN",
    "START",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "LOCK",
    "UNLOCK",
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
    "LOAD",
    "HANDLER",
    "GRANT",
    "REVOKE",
    "KILL",
    "SHUTDOWN",
    "FLUSH",
    "RESET",
    "PURGE",
    "CHANGE",
    "INSTALL",
    "UNINSTALL",
    "CALL",
    "DO",
    "XA",
    "BINLOG",
    "CACHE",
    "BACKUP",
    "ANALYZE",
    "OPTIMIZE",
    "REPAIR",
    "CHECK",
    "CHECKSUM",
    "SIGNAL",
    "RESIGNAL",
    "ATTACH",
    "DETACH",
    "PRAGMA",
    "VACUUM",
    "REINDEX",
];
/// Functions whose effect outlives the statement (they stay with the pooled
/// connection) or reach outside the database.
const FORBIDDEN_FUNCTIONS: &[&str] =
    &["GET_LOCK", "RELEASE_LOCK", "RELEASE_ALL_LOCKS", "LOAD_FILE"];

/// Checks `sql` for `call`: `Ok(true)` for a write, `Ok(false)` for a read.
pub fn check(sql: &str, call: Call) -> Result<bool, DbError> {
    let tokens = tokenize(sql)?;
    let words = || {
        tokens.iter().filter_map(|t| match t {
            Token::Word(w, depth) => Some((w.as_str(), *depth)),
            _ => None,
        })
    };
    let Some((first, _)) = words().next() else {
        return Err(DbError::BadStatement("empty statement".into()));
    };
    if let Some(pos) = tokens.iter().position(|t| *t == Token::Semicolon)
        && pos + 1 < tokens.len()
    {
        return Err(DbError::BadStatement(
            "one statement per call: the text holds more than one".into(),
        ));
    }
    if tokens.contains(&Token::Assign) {
        return Err(not_allowed(
            "user variables (`:=`) would outlive the request",
        ));
    }
    let is_read = READS.contains(&first);
    let mut write = WRITES.contains(&first);
    if REFUSED.contains(&first) {
        return Err(not_allowed(&format!(
            "{first} statements are not run for apps"
        )));
    }
    if !is_read && !write {
        return Err(DbError::BadStatement(format!(
            "{first} does not start an SQL statement"
        )));
    }
    for (word, depth) in words().skip(1) {
        if FORBIDDEN_FUNCTIONS.contains(&word) {
            return Err(not_allowed(&format!("{word}() is not available to apps")));
        }
        match word {
            "OUTFILE" | "DUMPFILE" => {
                return Err(not_allowed("writing files on the database server"));
            }
            "INTO" if is_read => {
                return Err(not_allowed("SELECT ... INTO would outlive the request"));
            }
            "TEMPORARY" if first == "CREATE" => {
                return Err(not_allowed("temporary tables would outlive the request"));
            }
            // `WITH ... UPDATE` and friends: a CTE in front of a write.
            "INSERT" | "UPDATE" | "DELETE" | "REPLACE" if first == "WITH" && depth == 0 => {
                write = true;
            }
            _ => {}
        }
    }
    if write && call == Call::Query {
        return Err(DbError::BadStatement(format!(
            "query runs reads only; send {first} statements through execute"
        )));
    }
    Ok(write)
}

fn not_allowed(what: &str) -> DbError {
    DbError::NotAllowed(what.to_string())
}

#[derive(Debug, PartialEq)]
enum Token {
    /// An upper-cased keyword or identifier, with its parenthesis depth.
    Word(String, u32),
    Semicolon,
    Assign,
    Other,
}

/// Splits `sql` into the tokens the checks need, skipping string literals, quoted
/// identifiers and comments, so a keyword inside a string is data, not SQL. Quotes
/// follow MySQL's default mode (backslash escapes); apps cannot change the mode.
fn tokenize(sql: &str) -> Result<Vec<Token>, DbError> {
    let mut tokens = Vec::new();
    let mut depth = 0u32;
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '\'' | '"' | '`' => skip_quoted(&mut chars, c)?,
            '#' => skip_line(&mut chars),
            // MySQL starts a `--` comment only when whitespace follows (`1--1` is
            // arithmetic); reading anything else as code can only refuse more.
            '-' if sql[i..].starts_with("--")
                && sql[i + 2..].chars().next().is_none_or(char::is_whitespace) =>
            {
                skip_line(&mut chars)
            }
            '/' if sql[i..].starts_with("/*") => {
                // MySQL runs the text of `/*! ... */` comments as SQL.
                if sql[i..].starts_with("/*!") || sql[i..].starts_with("/*M!") {
                    return Err(not_allowed("executable comments (`/*! ... */`)"));
                }
                chars.next();
                let end = sql[i + 2..]
                    .find("*/")
                    .ok_or_else(|| DbError::BadStatement("unterminated comment".into()))?;
                let stop = i + 2 + end + 2;
                while chars.peek().is_some_and(|&(j, _)| j < stop) {
                    chars.next();
                }
            }
            ';' => tokens.push(Token::Semicolon),
            ':' if chars.peek().is_some_and(|&(_, n)| n == '=') => {
                chars.next();
                tokens.push(Token::Assign);
            }
            '(' => {
                depth += 1;
                tokens.push(Token::Other);
            }
            ')' => {
                depth = depth.saturating_sub(1);
                tokens.push(Token::Other);
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, n)) = chars.peek() {
                    if !(n.is_alphanumeric() || n == '_' || n == '$') {
                        break;
                    }
                    end = j + n.len_utf8();
                    chars.next();
                }
                tokens.push(Token::Word(sql[i..end].to_ascii_uppercase(), depth));
            }
            _ => tokens.push(Token::Other),
        }
    }
    Ok(tokens)
}

fn skip_quoted(
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    quote: char,
) -> Result<(), DbError> {
    while let Some((_, c)) = chars.next() {
        if c == '\\' && quote != '`' {
            chars.next();
        } else if c == quote {
            // A doubled quote is an escaped quote, not the end.
            if chars.peek().is_some_and(|&(_, n)| n == quote) {
                chars.next();
            } else {
                return Ok(());
            }
        }
    }
    Err(DbError::BadStatement(format!("unterminated {quote} quote")))
}

fn skip_line(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>) {
    for (_, c) in chars.by_ref() {
        if c == '\n' {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(sql: &str, call: Call) -> Result<bool, DbError> {
        check(sql, call)
    }

    #[test]
    fn reads_and_writes() {
        assert_eq!(kind("SELECT * FROM t WHERE id = ?", Call::Query), Ok(false));
        assert_eq!(kind("  (select 1)", Call::Query), Ok(false));
        assert_eq!(kind("insert into t values (?)", Call::Execute), Ok(true));
        assert_eq!(kind("SELECT 1", Call::Execute), Ok(false));
        assert_eq!(kind("SELECT 'DELETE; DROP' AS x;", Call::Query), Ok(false));
        assert_eq!(
            kind("WITH c AS (SELECT 1) UPDATE t SET x = 1", Call::Execute),
            Ok(true)
        );
    }

    #[test]
    fn writes_through_query_name_execute() {
        let Err(DbError::BadStatement(msg)) = kind("DELETE FROM t", Call::Query) else {
            panic!("expected a bad statement");
        };
        assert!(msg.contains("execute"), "{msg}");
        assert!(kind("WITH c AS (SELECT 1) DELETE FROM t", Call::Query).is_err());
    }

    #[test]
    fn refuses_what_outlives_the_request_or_leaves_the_database() {
        for sql in [
            "SET @a = 1",
            "SET SESSION sql_mode = ''",
            "USE other",
            "START TRANSACTION",
            "COMMIT",
            "LOCK TABLES t WRITE",
            "LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE t",
            "SELECT @a := 1",
            "SELECT 1 INTO @a",
            "SELECT * FROM t INTO OUTFILE '/tmp/x'",
            "CREATE TEMPORARY TABLE x (a INT)",
            "SELECT GET_LOCK('x', 1)",
            "SELECT LOAD_FILE('/etc/passwd')",
            "/*!50000 SET @a = 1 */ SELECT 1",
            "ATTACH DATABASE '/tmp/x' AS y",
            "PRAGMA journal_mode = OFF",
        ] {
            assert!(
                matches!(kind(sql, Call::Execute), Err(DbError::NotAllowed(_))),
                "{sql}"
            );
        }
    }

    #[test]
    fn one_statement_per_call() {
        assert!(matches!(
            kind("SELECT 1; DROP TABLE t", Call::Query),
            Err(DbError::BadStatement(_))
        ));
        assert!(matches!(
            kind("SELECT 1 -- ; DROP TABLE t", Call::Query),
            Ok(false)
        ));
        // Not a comment in MySQL: the assignment after it is code.
        assert!(kind("SELECT 1 --a, @v := 5", Call::Query).is_err());
        assert!(matches!(
            kind("", Call::Query),
            Err(DbError::BadStatement(_))
        ));
        assert!(matches!(
            kind("SELECT 'x", Call::Query),
            Err(DbError::BadStatement(_))
        )); // A typo is the app's mistake, not a refused statement.
        assert!(matches!(
            kind("SELEC 1", Call::Query),
            Err(DbError::BadStatement(_))
        ));
    }
}
