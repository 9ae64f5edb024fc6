//! Command agents: an external program is an agent (placeholder until the backend lands).
