"""Print-shop batch: a jobs file, one row per print, rendered to print-ready TIFFs, resumably.

    jobs_file   the file's format (CSV, TOML, JSON rows) and loading it whole: every error, or the jobs
    fields      each field of a row parsed into its value (sizes, DPI, print size, panels, seed)
    planning    each row against its model's canvas: the PrintJob, its DPI (the one DPI policy), panels,
                one job per image of a content folder
    engines     LocalEngine (this process, famos.renderer) and ServerEngine (a render server)
    ledger      OUT/batch-manifest.json: finished outputs, verified and skipped on a re-run
    report      OUT/batch-report.csv/.json and the summary table
    run         the loop: one failing job stops nothing
    cli         `famos batch`

It is a client of the renderer: it imports the core (famos/) and the gRPC client, never the server.
"""
