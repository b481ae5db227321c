//! Feedback waiting for a session's next turn: the user's reactions to the assistant's replies
//! (👍, 👎, any emoji), noted by the intake without a write and given to the agent at the start of
//! the next turn's text (`[feedback: 👍 on an earlier message]`). Held in memory only — a reaction
//! costs no fsync — so a restart forgets notes not yet given. Bounded per session and in sessions.
//! Pure.

use std::collections::HashMap;

/// Notes kept per session (the newest win): a burst of reactions says no more than its last few.
pub const MAX_NOTES_PER_SESSION: usize = 4;
/// Sessions with notes waiting at once; a note for a further session is dropped (logged at
/// debug). Reactions from allowed senders only, so this is never reached in practice.
pub const MAX_SESSIONS: usize = 256;

#[derive(Default)]
pub struct Feedback {
    notes: HashMap<String, Vec<String>>,
}

impl Feedback {
    /// Keeps `note` for `session`'s next turn; `false` when it was dropped (too many sessions).
    pub fn note(&mut self, session: &str, note: String) -> bool {
        if !self.notes.contains_key(session) && self.notes.len() >= MAX_SESSIONS {
            return false;
        }
        let list = self.notes.entry(session.to_string()).or_default();
        if list.len() >= MAX_NOTES_PER_SESSION {
            list.remove(0);
        }
        list.push(note);
        true
    }

    /// The notes for `session`'s turn starting now, oldest first; forgotten here.
    pub fn take(&mut self, session: &str) -> Vec<String> {
        self.notes.remove(session).unwrap_or_default()
    }

    /// A reset ends the conversation the feedback was about.
    pub fn forget(&mut self, session: &str) {
        self.notes.remove(session);
    }
}

/// The text the agent receives: the notes, one a line, before the messages' text.
pub fn prepend(notes: &[String], text: &str) -> String {
    if notes.is_empty() {
        return text.to_string();
    }
    format!("{}\n{text}", notes.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_bounded_taken_once_and_prepended() {
        let mut f = Feedback::default();
        for i in 0..6 {
            assert!(f.note("a", format!("n{i}")));
        }
        let notes = f.take("a");
        assert_eq!(notes, vec!["n2", "n3", "n4", "n5"]);
        assert!(f.take("a").is_empty());
        assert_eq!(prepend(&notes[..1], "hi"), "n2\nhi");
        assert_eq!(prepend(&[], "hi"), "hi");
        for i in 0..MAX_SESSIONS {
            assert!(f.note(&format!("s{i}"), "x".into()));
        }
        assert!(!f.note("one-more", "x".into()));
        assert!(
            f.note("s0", "y".into()),
            "a known session still takes notes"
        );
        f.forget("s0");
        assert!(f.take("s0").is_empty());
    }
}
