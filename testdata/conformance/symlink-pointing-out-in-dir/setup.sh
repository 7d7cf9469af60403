ln -s ../../../outside context/dir/out
