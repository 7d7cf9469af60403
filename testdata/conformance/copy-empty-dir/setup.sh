mkdir context/empty
