"""Value types and text shared by every stage: errors, image status, records, safe text, stage timing.

Imports nothing else of allbatch: every other folder may import from here.
"""
