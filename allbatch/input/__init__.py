"""Stage 1, input: discover the files under SRC, read their bytes (hashed while read), check and decode them.

discover (sorted, hashed paths) -> read (``EncodedImage``) -> check headers -> decode (uint8 RGB, host).
"""
