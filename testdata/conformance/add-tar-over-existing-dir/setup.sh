mkdir -p t/etc && echo new > t/etc/added && tar --owner=0 --group=0 --numeric-owner --mtime=@1 --sort=name --no-recursion -C t -cf context/e.tar etc etc/added
