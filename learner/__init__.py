"""Everything that proposes, decides and learns; no Textual, no torch at import."""
