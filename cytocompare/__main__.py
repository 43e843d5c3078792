from cytocompare.cli import main

main()
