ln -s ../outside context/out
