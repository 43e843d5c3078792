from cytocompare.cli import main

if __name__ == "__main__":  # a dask LocalCluster's worker processes import this module again
    main()
