"""Stage 8, report: ``allbatch report``, one self-contained HTML file from a results.h5 (no model, no GPU, no network).

content.py gathers what the page shows from the results file, thumbs.py makes the base64 thumbnails
(read from the images at report time), svg.py draws the inline charts, html.py renders the template.
"""
