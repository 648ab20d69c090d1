"""Stage 6, write: results.h5, its schema, the output lock, a crash-safe resumable writer, merge of parts,
readers and the CSV export. Nothing here knows how the rows were computed."""
