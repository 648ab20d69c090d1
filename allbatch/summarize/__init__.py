"""Stage 7, summarize: what results.h5 says per folder (a slide or a patient), computed from the file alone
(no model, no GPU): the verdicts (groups.py), their ``/groups`` storage (groups_h5.py), CSV (groups_csv.py)
and the terminal table (render.py)."""
