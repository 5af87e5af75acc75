"""`relman fleet`: one release on many hosts over the user's own OpenSSH (DESIGN section 9)."""
