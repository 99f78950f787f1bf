from .services import main

main()
