from matgnn.cli.main import main

main()
