mkdir -p t/o && echo x > t/o/f && tar --owner=1234 --group=5678 --numeric-owner --mtime=@1 --sort=name -C t -cf context/o.tar o
