from senformer_cli.cli import main

main()
