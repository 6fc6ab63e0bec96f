//! What kind of statement a guest sent, decided before it reaches a database.
//!
//! Guests get prepared statements only, one per call. On top of that, wharf runs only
//! reads and writes for them: nothing that changes the connection's session (SET,
//! USE, user variables, temporary tables, named locks), controls transactions behind
//! the host's back, waits on purpose, or touches the server's files. A read can never
//! write.
//!
//! The filter reads the text the way the server's own lexer does, per dialect: which
//! characters are whitespace, when `--` starts a comment, how strings and quoted
//! names end. Where the two could disagree, it reads the text every way the server
//! might and refuses if any reading is refused. A quoted name is still a name:
//! `` `GET_LOCK`(...) `` calls the function. The filter is the first line only: MySQL
//! connections are also reset before they go back to the pool, so whatever it
//! misses ends with the request.

use super::{DbError, Dialect};

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
    "END",
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
/// Functions that wait on purpose (holding a connection and a request slot), whose
/// effect outlives the statement (it stays with the pooled connection), that look at
/// other sessions' locks, or that reach outside the database.
const FORBIDDEN_FUNCTIONS: &[&str] = &[
    "SLEEP",
    "BENCHMARK",
    "GET_LOCK",
    "RELEASE_LOCK",
    "RELEASE_ALL_LOCKS",
    "IS_FREE_LOCK",
    "IS_USED_LOCK",
    "MASTER_POS_WAIT",
    "MASTER_GTID_WAIT",
    "SOURCE_POS_WAIT",
    "WAIT_FOR_EXECUTED_GTID_SET",
    "WAIT_UNTIL_SQL_THREAD_AFTER_GTIDS",
    "LOAD_FILE",
    "LOAD_EXTENSION",
];

/// Checks `sql` for `call` as the `dialect`'s server reads it: `Ok(true)` for a
/// write, `Ok(false)` for a read.
pub fn check(sql: &str, call: Call, dialect: Dialect) -> Result<bool, DbError> {
    let mut verdicts = Lexer::readings(dialect)
        .iter()
        .map(|&lexer| check_tokens(&tokenize(sql, lexer)?, call));
    let first = verdicts.next().expect("every dialect has a reading");
    let mut agreed = true;
    for verdict in verdicts {
        if let Err(refused @ DbError::NotAllowed(_)) = verdict {
            return Err(refused);
        }
        agreed &= verdict == first;
    }
    if agreed || matches!(first, Err(DbError::NotAllowed(_))) {
        return first;
    }
    // Neither reading is refused, yet they disagree on where a string ends: what runs
    // depends on a server mode the app cannot see.
    Err(DbError::BadStatement(
        "a backslash in a quoted string reads differently under the server's \
         NO_BACKSLASH_ESCAPES or ANSI_QUOTES mode: double the quote ('') or pass the \
         value as a parameter"
            .into(),
    ))
}

fn check_tokens(tokens: &[Token], call: Call) -> Result<bool, DbError> {
    let words = || {
        tokens.iter().filter_map(|t| match t {
            Token::Word(w, depth) => Some((w.as_str(), *depth, false)),
            Token::Name(w, depth) => Some((w.as_str(), *depth, true)),
            _ => None,
        })
    };
    let first = match words().next() {
        None => return Err(DbError::BadStatement("empty statement".into())),
        Some((_, _, true)) => {
            return Err(DbError::BadStatement(
                "a quoted name does not start an SQL statement".into(),
            ));
        }
        Some((first, _, false)) => first,
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
    for (word, depth, quoted) in words().skip(1) {
        // Quoted or not, the server calls the function of that name.
        if FORBIDDEN_FUNCTIONS.contains(&word) {
            return Err(not_allowed(&format!("{word}() is not available to apps")));
        }
        if quoted {
            continue;
        }
        match word {
            "OUTFILE" | "DUMPFILE" => {
                return Err(not_allowed("writing files on the database server"));
            }
            "INTO" if is_read => {
                return Err(not_allowed("SELECT ... INTO would outlive the request"));
            }
            "TEMPORARY" | "TEMP" if first == "CREATE" => {
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
    /// A quoted identifier (or, where the server's mode decides, a double-quoted
    /// string), upper-cased, with its parenthesis depth: a name, never a keyword.
    Name(String, u32),
    Semicolon,
    Assign,
    Other,
}

/// One way a server may read statement text.
#[derive(Debug, Clone, Copy)]
enum Lexer {
    /// MySQL/MariaDB: `#` and `-- ` comments, executable `/*! */` comments. The
    /// server's global `sql_mode`, which apps cannot see or change, decides the rest:
    /// backslash escapes in strings unless it has `NO_BACKSLASH_ESCAPES`, and with
    /// `ANSI_QUOTES` a `"` opens a name, which never has backslash escapes.
    Mysql {
        backslash_escapes: bool,
        ansi_quotes: bool,
    },
    /// SQLite: `--` always a comment, no backslash escapes, `[names]`.
    Sqlite,
}

impl Lexer {
    fn readings(dialect: Dialect) -> &'static [Lexer] {
        match dialect {
            // Without backslash escapes `"` ends at the same place whether it opens a
            // string or a name, so `{ false, true }` reads as `{ false, false }`.
            Dialect::Mysql => &[
                Lexer::Mysql {
                    backslash_escapes: true,
                    ansi_quotes: false,
                },
                Lexer::Mysql {
                    backslash_escapes: false,
                    ansi_quotes: false,
                },
                Lexer::Mysql {
                    backslash_escapes: true,
                    ansi_quotes: true,
                },
            ],
            Dialect::Sqlite => &[Lexer::Sqlite],
        }
    }

    /// The server's whitespace: ASCII only (a non-breaking space is part of a name to
    /// both servers). MySQL's `my_isspace` and SQLite's `sqlite3Isspace` agree.
    fn is_space(c: char) -> bool {
        matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
    }

    /// Whether `--` followed by `next` starts a comment. MariaDB's lexer wants a space
    /// or a control character after it (`1--1` is arithmetic); SQLite always.
    fn dash_comment(self, next: Option<char>) -> bool {
        match self {
            Lexer::Mysql { .. } => next.is_none_or(|c| Self::is_space(c) || c.is_ascii_control()),
            Lexer::Sqlite => true,
        }
    }
}

/// Characters of a bare keyword or name: ASCII letters, digits, `_`, `$`, and, to
/// both servers, every non-ASCII character.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

type Chars<'a> = std::iter::Peekable<std::str::CharIndices<'a>>;

/// Splits `sql` into the tokens the checks need, skipping string literals and
/// comments, so a keyword inside a string is data, not SQL.
fn tokenize(sql: &str, lexer: Lexer) -> Result<Vec<Token>, DbError> {
    let (mysql, backslash, ansi_quotes) = match lexer {
        Lexer::Mysql {
            backslash_escapes,
            ansi_quotes,
        } => (true, backslash_escapes, ansi_quotes),
        Lexer::Sqlite => (false, false, false),
    };
    let mut tokens = Vec::new();
    let mut depth = 0u32;
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if Lexer::is_space(c) => {}
            '\'' => {
                skip_quoted(&mut chars, c, backslash)?;
            }
            // A string in MySQL's default mode, a name with ANSI_QUOTES or in SQLite:
            // checked as a name, which can only refuse more.
            '"' => {
                let name = skip_quoted(&mut chars, c, backslash && !ansi_quotes)?;
                tokens.push(Token::Name(name.to_ascii_uppercase(), depth));
            }
            '`' => {
                let name = skip_quoted(&mut chars, c, false)?;
                tokens.push(Token::Name(name.to_ascii_uppercase(), depth));
            }
            '[' if !mysql => {
                let name = skip_until(&mut chars, ']')?;
                tokens.push(Token::Name(name.to_ascii_uppercase(), depth));
            }
            '#' if mysql => skip_line(&mut chars),
            '-' if sql[i..].starts_with("--")
                && lexer.dash_comment(sql[i + 2..].chars().next()) =>
            {
                skip_line(&mut chars)
            }
            '/' if sql[i..].starts_with("/*") => {
                // MySQL runs the text of `/*! ... */` comments as SQL.
                if mysql && (sql[i..].starts_with("/*!") || sql[i..].starts_with("/*M!")) {
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
            c if is_word_char(c) => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, n)) = chars.peek() {
                    if !is_word_char(n) {
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

/// Skips to the end of a literal or name opened by `quote` and returns its content
/// (escapes left as they are: names never need them).
fn skip_quoted(chars: &mut Chars<'_>, quote: char, backslash: bool) -> Result<String, DbError> {
    let mut content = String::new();
    while let Some((_, c)) = chars.next() {
        if c == '\\' && backslash {
            chars.next();
        } else if c == quote {
            // A doubled quote is an escaped quote, not the end.
            if chars.peek().is_some_and(|&(_, n)| n == quote) {
                chars.next();
            } else {
                return Ok(content);
            }
        }
        content.push(c);
    }
    Err(DbError::BadStatement(format!("unterminated {quote} quote")))
}

/// Skips to `close` (SQLite's `[name]`, which has no escapes) and returns the content.
fn skip_until(chars: &mut Chars<'_>, close: char) -> Result<String, DbError> {
    let mut content = String::new();
    for (_, c) in chars.by_ref() {
        if c == close {
            return Ok(content);
        }
        content.push(c);
    }
    Err(DbError::BadStatement(format!("unterminated {close} name")))
}

fn skip_line(chars: &mut Chars<'_>) {
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
        check(sql, call, Dialect::Mysql)
    }

    fn refused(sql: &str, dialect: Dialect) -> bool {
        matches!(
            check(sql, Call::Execute, dialect),
            Err(DbError::NotAllowed(_))
        )
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
        // Quoted names that are keywords are names, not keywords.
        assert_eq!(
            kind("SELECT `into`, `temporary` FROM t", Call::Query),
            Ok(false)
        );
        assert_eq!(
            check(
                "SELECT [into] FROM t -- ; DROP",
                Call::Query,
                Dialect::Sqlite
            ),
            Ok(false)
        );
        assert_eq!(
            check("SELECT 'it''s' FROM t", Call::Query, Dialect::Sqlite),
            Ok(false)
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
            assert!(refused(sql, Dialect::Mysql), "{sql}");
        }
    }

    #[test]
    fn mysql_names_in_backticks_and_spaced_calls_are_the_functions_they_name() {
        for sql in [
            "SELECT `GET_LOCK`('x',0)",
            "SELECT `get_lock` ('x', 0)",
            "SELECT GET_LOCK ('x', 0)",
            "SELECT GET_LOCK/**/('x', 0)",
            "SELECT `LOAD_FILE`('/etc/passwd')",
            "SELECT \"RELEASE_LOCK\"('x')",
            "SELECT IS_USED_LOCK('x')",
        ] {
            assert!(refused(sql, Dialect::Mysql), "{sql}");
        }
    }

    #[test]
    fn mysql_refuses_functions_that_wait_on_purpose() {
        for sql in [
            "SELECT SLEEP(5)",
            "SELECT BENCHMARK(100000000, MD5('x'))",
            "SELECT MASTER_POS_WAIT('log', 4)",
            "SELECT MASTER_GTID_WAIT('0-1-100')",
            "SELECT * FROM t WHERE id = 1 AND sleep(1) = 0",
        ] {
            assert!(refused(sql, Dialect::Mysql), "{sql}");
        }
    }

    #[test]
    fn mysql_dash_comments_follow_the_servers_whitespace_rule() {
        // A non-breaking space is no whitespace to the server: what follows is code.
        assert!(refused("SELECT 1 --\u{a0}, SLEEP(5)", Dialect::Mysql));
        assert!(refused("SELECT 1 --\u{a0}\n, SLEEP(5)", Dialect::Mysql));
        // Any control character after `--` makes a comment to the server.
        assert_eq!(kind("SELECT 1 --\x01, SLEEP(5)", Call::Query), Ok(false));
        assert_eq!(kind("SELECT 1 --\x0b, SLEEP(5)", Call::Query), Ok(false));
        assert_eq!(kind("SELECT 1 --", Call::Query), Ok(false));
        // `#` is a comment to MySQL.
        assert_eq!(kind("SELECT 1 # , SLEEP(5)", Call::Query), Ok(false));
    }

    #[test]
    fn mysql_strings_are_read_with_and_without_backslash_escapes() {
        // With NO_BACKSLASH_ESCAPES the string ends at the second quote and the call
        // after it is code; the filter refuses whichever way the server reads it.
        assert!(refused("SELECT '\\' , SLEEP(5) -- '", Dialect::Mysql));
        assert!(refused("SELECT 'a\\'', SLEEP(5) -- '", Dialect::Mysql));
        assert_eq!(
            kind("SELECT 'a\\\\b', 'it''s' FROM t", Call::Query),
            Ok(false)
        );
        let Err(DbError::BadStatement(msg)) = kind("SELECT 'a\\'b' FROM t", Call::Query) else {
            panic!("a string whose end depends on the mode passed");
        };
        assert!(msg.contains("parameter"), "{msg}");
    }

    #[test]
    fn mysql_double_quotes_are_also_read_as_names_without_backslash_escapes() {
        // ANSI_QUOTES: `"\"` is a whole name while `'\' '` is still one string with
        // an escaped quote, so the call after them is code.
        for sql in [
            "SELECT 1 AS \"\\\", '\\' ' , LOAD_FILE(0x2f6574632f706173737764) -- ' -- \"",
            "SELECT 1 AS \"\\\", '\\' ' , GET_LOCK('x', 1) -- ' -- \"",
            "SELECT 1 AS \"\\\", '\\' ' INTO OUTFILE '/tmp/x' -- ' -- \"",
        ] {
            assert!(refused(sql, Dialect::Mysql), "{sql}");
        }
        assert_eq!(
            kind("SELECT 1 AS \"a\"\"b\" FROM t", Call::Query),
            Ok(false)
        );
    }

    #[test]
    fn sqlite_dash_always_starts_a_comment() {
        for sql in [
            "--SELECT\nATTACH DATABASE 'x' AS y",
            "--SELECT\nBEGIN",
            "--\u{a0}SELECT\nDETACH y",
            "/* SELECT */ PRAGMA writable_schema = ON",
            "CREATE TEMP TABLE x (a)",
            "CREATE TEMPORARY TABLE x (a)",
        ] {
            assert!(refused(sql, Dialect::Sqlite), "{sql}");
        }
        // No backslash escapes and no `#` comments in SQLite: the call is code.
        assert!(refused(
            "SELECT 'a\\', load_extension('x') --'",
            Dialect::Sqlite
        ));
        assert!(matches!(
            check("SELECT 1 # x", Call::Query, Dialect::Sqlite),
            Ok(false)
        ));
        assert!(refused("SELECT [load_extension]('x')", Dialect::Sqlite));
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
        assert!(matches!(
            kind("`SELECT` 1", Call::Query),
            Err(DbError::BadStatement(_))
        ));
    }
}
