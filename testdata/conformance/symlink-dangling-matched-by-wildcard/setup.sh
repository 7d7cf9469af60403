ln -s nowhere context/dangling
