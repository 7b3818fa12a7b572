from veza_canary.launch import main

if __name__ == "__main__":
    main()
