"""Versioned model artefacts: atomic publication, verification, rollback, retention, announcements."""
