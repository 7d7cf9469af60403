ln -s nowhere context/dir/dangling
