"""Built-in reporters."""

from cytocompare.hookspecs import hookimpl


@hookimpl
def register_reporters(register):
    register("table1", "cytocompare.reports.tables:Table1Reporter",
             description="Table-1-style Markdown: strict and tolerant precision/recall per class, mean ± sd")
    register("recall-chart", "cytocompare.reports.charts:RecallChartReporter",
             description="Per-class recall of every method side by side (paper Fig. 3B)")
    register("comparison-chart", "cytocompare.reports.comparison:ComparisonChartReporter",
             description="Per-class recall of methods from different splits in one chart and table "
                         "(paper Fig. 3B; the protocol's comparisons)")
    register("confusion-chart", "cytocompare.reports.charts:ConfusionChartReporter",
             description="Row-normalised confusion matrix per method (paper Fig. 2)")
    register("paired-stats", "cytocompare.reports.paired:PairedStatsReporter",
             description="Paired comparisons of methods on the identical split, overall and per class (McNemar, bootstrap CIs, fold-wise tests)")
    register("html", "cytocompare.reports.html:HtmlReporter",
             description="index.html linking every table and chart of the run")
